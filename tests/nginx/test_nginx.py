"""ngx_http_cellroute_module in Debian's nginx, with real requests on loopback: three echoing
cells, the dev Topology Service, reloads, broken configurations.

The expected cell of every request comes from the cellroute CLI on the same files, so the test
checks that nginx routes as the library does, not against answers written here.
"""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from harness import EchoCells, Nginx, TopologyServer, free_port, loopback_topology, send

MODULE = os.environ.get("CELLROUTE_NGINX_MODULE", "")
CLI = os.environ.get("CELLROUTE_CLI", "")
SERVER = os.environ.get("CELLROUTE_TOPOLOGY_SERVER", "")
EXAMPLES = os.environ.get("CELLROUTE_EXAMPLES", "")

ROUTER_HEADERS = """
    proxy_set_header X-GitLab-HTTP-Router-Rule-Action $cellroute_rule_action;
    proxy_set_header X-GitLab-HTTP-Router-Rule-Type $cellroute_rule_type;
    proxy_set_header X-Cellroute-Fallback $cellroute_fallback;
    proxy_set_header X-Cellroute-Cell-Id $cellroute_cell_id;
"""


def server_block(port, extra=""):
    return f"""
  server {{
    listen 127.0.0.1:{port};
    location / {{
      cellroute on;
{ROUTER_HEADERS}
      proxy_pass http://$cellroute_address;
    }}
    location = /-/cellroute {{
      cellroute_status;
    }}
{extra}
  }}"""


@pytest.fixture(scope="module", autouse=True)
def environment():
    for name, value in (("CELLROUTE_NGINX_MODULE", MODULE), ("CELLROUTE_CLI", CLI),
                        ("CELLROUTE_TOPOLOGY_SERVER", SERVER),
                        ("CELLROUTE_EXAMPLES", EXAMPLES)):
        assert value and os.path.exists(value), f"{name} must name an existing file"


@pytest.fixture
def cells():
    c = EchoCells(3)
    yield c
    c.close()


@pytest.fixture
def nginxes():
    started = []
    yield started
    for n in started:
        code = n.stop()
        log = n.log()
        # Workers and master shut down cleanly: no crash, no leaked socket, no alert.
        assert code == 0, log
        assert "[alert]" not in log and "exited on signal" not in log, log


def start(nginxes, tmp_path, http, port, workers=1):
    n = Nginx(MODULE, tmp_path / "nginx", http, workers=workers, listen_ports=[port])
    nginxes.append(n.start())
    return n


def requests_jsonl():
    with open(os.path.join(EXAMPLES, "requests.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def cli_decisions(*args):
    out = subprocess.run([CLI, "route", *args, os.path.join(EXAMPLES, "requests.jsonl")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def send_request(port, req):
    headers = {"Host": req.get("host", "localhost"), **req.get("headers", {})}
    return send(port, req.get("method", "GET"), req["path"], headers, req.get("query"))


def assert_reached(status, body, cell_id, action=None, type_=None):
    assert status == 200, body
    assert body["cell"] == cell_id, body
    seen = body["headers"]
    if action is not None:
        # nginx sends no header for an empty value.
        assert seen.get("x-gitlab-http-router-rule-action", "") == action, seen
        assert seen.get("x-gitlab-http-router-rule-type", "") == type_, seen


def test_requests_reach_the_cells_that_own_them(tmp_path, cells, nginxes):
    topology = loopback_topology(EXAMPLES, cells.ports, str(tmp_path / "topology.toml"))
    rules, claims = os.path.join(EXAMPLES, "rules.json"), os.path.join(EXAMPLES, "claims.json")
    port = free_port()
    start(nginxes, tmp_path, f"""
  cellroute_rules {rules};
  cellroute_topology {topology};
  cellroute_claims {claims};
{server_block(port)}""", port)

    expected = cli_decisions("--rules", rules, "--topology", topology, "--claims", claims)
    requests = requests_jsonl()
    assert len(expected) == len(requests)
    kinds = set()
    for req, want in zip(requests, expected):
        before = cells.requests_seen()
        status, body = send_request(port, req)
        if want["result"] == "rejected":
            # A corrupt token: 400 from nginx, and no cell saw the request.
            assert status == 400, (req, body)
            assert cells.requests_seen() == before
            kinds.add("rejected")
            continue
        assert_reached(status, body, want["cell_id"], want["action"], want["type"])
        assert body["path"] == req["path"] + ("?" + req["query"] if req.get("query") else "")
        assert body["headers"].get("x-cellroute-cell-id") == str(want["cell_id"])
        kinds.add(want["source"])
    # The mix exercised every way a cell is found.
    assert {"rejected", "claims_file", "cell_list", "fallback"} <= kinds

    status, metrics = send(port, path="/-/cellroute")
    assert status == 200
    assert 'cellroute_decisions_total{rule="top_level_namespace"' in metrics
    assert 'cellroute_rejected_requests_total{reason="invalid_input"} 1' in metrics


def test_a_claim_only_the_service_knows_then_the_service_dies(tmp_path, cells, nginxes):
    topology = loopback_topology(EXAMPLES, cells.ports, str(tmp_path / "topology.toml"))
    claims = tmp_path / "service-claims.json"
    claims.write_text(json.dumps({"route": {"gitlab-org": 2, "service-only-group": 3}}))
    service = TopologyServer(SERVER, topology, str(claims))
    port = free_port()
    try:
        n = start(nginxes, tmp_path, f"""
  cellroute_topology {topology};
  cellroute_topology_service {service.address};
  cellroute_metadata x-cellroute-test nginx;
  cellroute_wait 5s;
{server_block(port)}""", port)

        # Not in any file: the first request waits for the service's answer.
        status, body = send(port, path="/service-only-group/project")
        assert_reached(status, body, 3, "classify", "route")
        assert body["headers"].get("x-cellroute-fallback") is None
        status, body = send(port, path="/gitlab-org/gitlab")
        assert_reached(status, body, 2)

        # A reload: the old worker stops its client, the new one starts its own and asks again.
        old_workers = n.worker_pids()
        n.reload()
        deadline = time.monotonic() + 20
        while n.worker_pids() & old_workers or not n.worker_pids():
            assert time.monotonic() < deadline, n.log()
            time.sleep(0.1)
        assert_reached(*send(port, path="/service-only-group/after-reload"), 3)

        service.kill()
        # Fail-static: what the table holds keeps routing, cells from the last topology too.
        status, body = send(port, path="/service-only-group/other")
        assert_reached(status, body, 3, "classify", "route")
        status, body = send(port, path="/dashboard", headers={"Cookie": "_gitlab_session=cell-2-x"})
        assert_reached(status, body, 2)
        # A claim nobody can answer now goes to the legacy cell, and says why.
        status, body = send(port, path="/never-asked-group/x")
        assert_reached(status, body, 1)
        assert body["headers"].get("x-cellroute-fallback") in ("unavailable", "pending")
    finally:
        service.kill()
    # The sync's events reach nginx's error log.
    assert "cellroute: " in n.log() and "sync_succeeded" in n.log()


def test_waiting_never_blocks_the_event_loop(tmp_path, cells, nginxes):
    topology = loopback_topology(EXAMPLES, cells.ports, str(tmp_path / "topology.toml"))
    # Every Classify answers after 3 s; a request waits at most 1.5 s.
    service = TopologyServer(SERVER, topology, faults=["Classify:delay=3000"])
    port = free_port()
    try:
        start(nginxes, tmp_path, f"""
  cellroute_topology_service {service.address};
  cellroute_wait 1500ms;
{server_block(port)}""", port)  # one worker: a blocked loop would hold every request
        # The service has answered GetCells before claims are asked.
        deadline = time.monotonic() + 10
        while send(port, path="/", headers={"Cookie": "_gitlab_session=cell-2-x"})[1]["cell"] != 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        order, results = [], {}

        def slow():
            results["slow"] = send(port, path="/slow-group/project")
            order.append("slow")

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.1)
        # A client that gives up while its request waits: nginx finalizes the request, and
        # the answer that comes later finds it gone.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /abandoned-group/x HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        s.close()
        results["fast"] = send(port, path="/dashboard",
                               headers={"Cookie": "_gitlab_session=cell-3-x"})
        order.append("fast")
        t.join(timeout=20)
        assert order == ["fast", "slow"]
        assert_reached(*results["fast"], 3)
        # Past cellroute_wait the request is decided without the answer: the legacy cell.
        status, body = results["slow"]
        assert_reached(status, body, 1)
        assert body["headers"].get("x-cellroute-fallback") in ("pending", "unavailable")
        # Late answers for requests that are gone are only freed (checked at shutdown).
        time.sleep(3.5)
        assert send(port, path="/", headers={"Cookie": "_gitlab_session=cell-2-x"})[0] == 200
        log = nginxes[0].log()
        assert "client prematurely closed connection" in log
        assert "/abandoned-group/x" not in "".join(c["path"] for s in cells.servers for c in s.seen)
    finally:
        service.kill()


def test_reload_picks_up_changed_rules_without_dropping_requests(tmp_path, cells, nginxes):
    topology = loopback_topology(EXAMPLES, cells.ports, str(tmp_path / "topology.toml"))
    rules = tmp_path / "rules.json"
    original = open(os.path.join(EXAMPLES, "rules.json")).read()
    assert '"name": "force-cell"' in original
    rules.write_text(original)
    port = free_port()
    n = start(nginxes, tmp_path, f"""
  cellroute_rules {rules};
  cellroute_topology {topology};
{server_block(port)}""", port, workers=2)
    pinned = {"Cookie": "pin-cell=cell-3"}
    assert_reached(*send(port, path="/users/sign_in", headers=pinned), 1)

    statuses, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            statuses.append(send(port, path="/dashboard",
                                 headers={"Cookie": "_gitlab_session=cell-2-x"})[0])

    t = threading.Thread(target=load)
    t.start()
    try:
        rules.write_text(original.replace('"name": "force-cell"', '"name": "pin-cell"'))
        old_workers = n.worker_pids()
        n.reload()
        deadline = time.monotonic() + 20
        while send(port, path="/users/sign_in", headers=pinned)[1]["cell"] != 3:
            assert time.monotonic() < deadline, n.log()
            time.sleep(0.1)
        # The old workers retire (finishing what they hold) and only new ones take requests.
        while n.worker_pids() & old_workers:
            assert time.monotonic() < deadline, n.log()
            time.sleep(0.1)
        # A broken file on the next reload: nginx keeps the running configuration.
        rules.write_text(original.replace('"action": "classify"', '"action": "teleport"', 1))
        n.reload()
        deadline = time.monotonic() + 20
        while "teleport" not in n.log():
            assert time.monotonic() < deadline, n.log()
            time.sleep(0.1)
        assert_reached(*send(port, path="/users/sign_in", headers=pinned), 3)
    finally:
        stop.set()
        t.join()
    assert len(statuses) > 10 and set(statuses) == {200}


def test_nginx_t_refuses_a_broken_ruleset_with_its_location(tmp_path):
    original = open(os.path.join(EXAMPLES, "rules.json")).read()
    rules = tmp_path / "rules.json"
    # A missing comma: a syntax error at a known line.
    broken = original.replace('"action": "classify",', '"action": "classify"', 1)
    rules.write_text(broken)
    line = broken[:broken.index('"action": "classify"')].count("\n") + 2
    n = Nginx(MODULE, tmp_path / "nginx", f"cellroute_rules {rules};\n" + server_block(free_port()))
    result = n.test()
    assert result.returncode != 0
    assert f"{rules}:{line}:" in result.stderr, result.stderr
    assert "[emerg]" in result.stderr

    # A rule the engine cannot run: named by its id.
    rules.write_text(original.replace('"action": "classify"', '"action": "teleport"', 1))
    result = n.test()
    assert result.returncode != 0
    assert "force_cell_cookie" in result.stderr and "teleport" in result.stderr, result.stderr

    # A missing file, and a directive's bad argument.
    n.write(f"cellroute_rules {tmp_path}/missing.json;\n" + server_block(free_port()))
    result = n.test()
    assert result.returncode != 0 and "missing.json" in result.stderr, result.stderr
    n.write("cellroute_tls cert=/x;\n" + server_block(free_port()))
    result = n.test()
    assert result.returncode != 0 and "cellroute_tls" in result.stderr, result.stderr

    rules.write_text(original)
    n.write(f"cellroute_rules {rules};\n" + server_block(free_port()))
    result = n.test()
    assert result.returncode == 0, result.stderr


def test_cells_by_name_through_upstream_blocks(tmp_path, cells, nginxes):
    # Cell addresses that are names: each cell an upstream block (with keepalive), chosen by
    # $cellroute_cell_id, as docs/nginx.md shows.
    topology = tmp_path / "topology.toml"
    loopback_topology(EXAMPLES, cells.ports, str(topology))
    text = topology.read_text()
    for i, p in enumerate(cells.ports, 1):
        text = text.replace(f'"127.0.0.1:{p}"', f'"cell-{i}.cells.internal:443"')
    topology.write_text(text)
    upstreams = "\n".join(f"  upstream cell_{i} {{ server 127.0.0.1:{p}; keepalive 4; }}"
                          for i, p in enumerate(cells.ports, 1))
    port = free_port()
    start(nginxes, tmp_path, f"""
  cellroute_topology {topology};
{upstreams}
  map $cellroute_cell_id $cell_upstream {{
    1 cell_1;
    2 cell_2;
    3 cell_3;
    default cell_1;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      cellroute on;
{ROUTER_HEADERS}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://$cell_upstream;
    }}
  }}""", port)
    for _ in range(3):  # again over the kept-alive connections
        assert_reached(*send(port, path="/dashboard",
                             headers={"Cookie": "_gitlab_session=cell-3-x"}), 3,
                       "classify", "SESSION_PREFIX")
        assert_reached(*send(port, path="/users/sign_in"), 1, "proxy", "")


def make_certificates(d):
    """A CA, a server certificate for topology.test and 127.0.0.1, a client certificate."""
    script = f"""set -e; cd '{d}'
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem
printf 'subjectAltName=DNS:topology.test,IP:127.0.0.1\\n' > san.ext
openssl req -newkey rsa:2048 -nodes -subj /CN=topology.test -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \\
  -extfile san.ext -out server.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=nginx -keyout client.key -out client.csr
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem
"""
    subprocess.run(["bash", "-c", script], check=True, capture_output=True, timeout=120)


def test_mtls_metadata_and_snapshot_reach_the_service(tmp_path, cells, nginxes):
    make_certificates(tmp_path)
    topology = loopback_topology(EXAMPLES, cells.ports, str(tmp_path / "topology.toml"))
    service = TopologyServer(SERVER, topology, os.path.join(EXAMPLES, "claims.json"),
                             tls=(str(tmp_path / "server.pem"), str(tmp_path / "server.key"),
                                  str(tmp_path / "ca.pem")))
    snapshot = tmp_path / "snapshot.json"
    port = free_port()
    try:
        n = start(nginxes, tmp_path, f"""
  cellroute_topology_service {service.address};
  cellroute_tls ca={tmp_path}/ca.pem cert={tmp_path}/client.pem key={tmp_path}/client.key
                server_name=topology.test;
  cellroute_metadata x-cellroute-test nginx;
  cellroute_snapshot {snapshot};
{server_block(port)}""", port)
        # No topology file: every cell and claim below came over mTLS.
        assert_reached(*send(port, path="/gitlab-org/gitlab"), 2, "classify", "route")
        assert_reached(*send(port, path="/o/acme-corp/x"), 3, "classify", "organization_path")
        calls = service.calls()
        assert {"GetCells", "Classify"} <= {c["method"] for c in calls}
        assert all("x-cellroute-test" in c["metadata_keys"] for c in calls), calls
        deadline = time.monotonic() + 10
        while not snapshot.exists():
            assert time.monotonic() < deadline, n.log()
            time.sleep(0.1)
        assert "snapshot_written" in n.log()
    finally:
        service.kill()
