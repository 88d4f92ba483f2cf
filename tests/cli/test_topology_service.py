"""The CLI against a running dev Topology Service."""
import json
import os
import subprocess

import pytest

from conftest import json_lines


@pytest.fixture(scope="module")
def service(examples):
    server = os.environ["CELLROUTE_TOPOLOGY_SERVER"]
    proc = subprocess.Popen([server, "--listen", "127.0.0.1:0", "--config",
                             f"{examples}/topology.toml", "--claims", f"{examples}/claims.json"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(timeout=10)


def test_route_claims_through_the_service(cellroute, service, examples):
    r = cellroute("route", "--topology-service", service, f"{examples}/requests.jsonl")
    assert r.returncode == 0, r.stderr
    out = json_lines(r.stdout)
    first = out[0]
    assert (first["rule"], first["cell_id"], first["source"]) == \
        ("top_level_namespace", 2, "route_table")
    assert out[1]["cell_id"] == 3 and out[1]["source"] == "route_table"
    # Cells, tokens and cookies are answered from the cell list the service sent.
    assert out[3]["cell_id"] == 2 and out[3]["source"] == "cell_list"
    # Unclaimed: NOT_FOUND, then the rules below decide, as with the claims file.
    assert out[8]["rule"] == "session_cookie" and out[8]["cell_id"] == 3


def test_topology_status(cellroute, service, tmp_path):
    snapshot = tmp_path / "snapshot.toml"
    r = cellroute("topology", "status", "--topology-service", service, "--json",
                  "--snapshot", str(snapshot))
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["state"] == "syncing" and s["topology_source"] == "topology_service"
    assert len(s["topology_hash"]) == 16
    first_hash = s["topology_hash"]
    assert [c["id"] for c in s["cells"]] == [1, 2, 3]
    assert "cell-2.gitlab.example.com:443" in snapshot.read_text()
    assert snapshot.read_text().startswith("# cellroute snapshot, synced_at_unix_ms = ")

    # The service unreachable: the snapshot serves, and the status says it is stale.
    r = cellroute("topology", "status", "--topology-service", "127.0.0.1:1", "--json",
                  "--snapshot", str(snapshot), "--wait-ms", "200")
    assert r.returncode == 1
    s = json.loads(r.stdout)
    assert s["state"] == "serving_stale" and s["topology_source"] == "snapshot"
    # The snapshot recorded when it was synced: its age shows, not "never".
    assert 0 <= s["last_good_sync_age_ms"] < 600_000
    assert s["topology_hash"] == first_hash
    assert "UNAVAILABLE" in s["last_error"]
    r = cellroute("route", "--topology-service", "127.0.0.1:1", "--snapshot", str(snapshot),
                  "--wait-ms", "200", "--path", "/help", "--cookie", "_gitlab_session=cell-2-ab")
    assert json_lines(r.stdout)[0]["cell_id"] == 2


def test_explain_against_the_service_says_where_the_claim_came_from(cellroute, service, tmp_path):
    requests = tmp_path / "twice.jsonl"
    requests.write_text('{"path": "/gitlab-org/x"}\n{"path": "/gitlab-org/y"}\n')
    r = cellroute("explain", "--topology-service", service, "--json", str(requests))
    assert r.returncode == 0, r.stderr
    first, second = json_lines(r.stdout)
    assert first["decision"]["cell_id"] == 2 and first["decision"]["source"] == "route_table"
    assert first["claim_answer"] == "asked the Topology Service now (Classify)"
    assert second["claim_answer"].startswith("from the route table, answered by the Topology "
                                             "Service ")
    r = cellroute("explain", "--topology-service", service, "--metadata", "x-client=cli-test",
                  "--path", "/gitlab-org/x")
    assert r.returncode == 0, r.stderr
    assert "claim: asked the Topology Service now (Classify)" in r.stdout


def test_route_metrics_on_stderr(cellroute, examples):
    r = cellroute("route", "--metrics", f"{examples}/requests.jsonl")
    assert r.returncode == 0, r.stderr
    routed = len(json_lines(r.stdout))
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in r.stderr.splitlines()
                  if line.startswith("cellroute_decisions_total{"))
    assert counted == routed


def test_dev_server_faults_from_its_command_line(cellroute, examples):
    server = os.environ["CELLROUTE_TOPOLOGY_SERVER"]
    proc = subprocess.Popen([server, "--listen", "127.0.0.1:0", "--config",
                             f"{examples}/topology.toml", "--fault", "GetCells:error=UNAVAILABLE"],
                            stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().split()[-1]
        r = cellroute("topology", "status", "--topology-service", address, "--json",
                      "--wait-ms", "300")
        assert r.returncode == 1
        assert "GetCells: UNAVAILABLE" in json.loads(r.stdout)["last_error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_usage_errors_exit_2_and_name_what_was_wrong(cellroute, examples):
    server = os.environ["CELLROUTE_TOPOLOGY_SERVER"]
    r = subprocess.run([server, "--config", f"{examples}/topology.toml", "--nope"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--nope" in r.stderr
    r = subprocess.run([server, "--config", f"{examples}/topology.toml", "--fault", "GetCells:error=NOPE"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not a gRPC code name" in r.stderr
    r = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip()
    assert "--fault" in subprocess.run([server, "--help"], capture_output=True, text=True,
                                       timeout=30).stdout
    r = cellroute("route", "--metadata", "no-equals-sign", "--path", "/")
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr
    r = cellroute("frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    version = cellroute("--version")
    assert version.returncode == 0 and version.stdout.strip() == \
        subprocess.run([server, "--version"], capture_output=True, text=True).stdout.strip()


def test_log_json_prints_the_sync_events_on_stderr(cellroute, examples, tmp_path):
    server = os.environ["CELLROUTE_TOPOLOGY_SERVER"]
    proc = subprocess.Popen([server, "--listen", "127.0.0.1:0", "--config",
                             f"{examples}/topology.toml", "--log-json",
                             "--fault", "GetCells:error=UNAVAILABLE,times=2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().split()[-1]
        snapshot = tmp_path / "snapshot.toml"
        # The first poll fails twice (the CLI retries once); the next run's poll succeeds.
        r = cellroute("topology", "status", "--topology-service", address, "--json",
                      "--wait-ms", "300", "--log-json", "--snapshot", str(snapshot))
        # (Besides the events, stderr has the CLI's own line about the failed sync.)
        events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        assert events, r.stderr
        assert all(e["time"].endswith("Z") for e in events)
        assert events[0]["event"] == "sync_failed"
        assert events[0]["code"] == "UNAVAILABLE"
        r = cellroute("topology", "status", "--topology-service", address, "--json",
                      "--log-json", "--snapshot", str(snapshot))
        assert r.returncode == 0, r.stderr
        kinds = [json.loads(line)["event"] for line in r.stderr.splitlines()
                 if line.startswith("{")]
        assert kinds[:3] == ["sync_succeeded", "topology_changed", "snapshot_written"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # The server's own lines: listening, every call (the faulted ones say so), stopping.
    lines = json_lines(proc.stderr.read())
    assert lines[0]["event"] == "listening" and lines[0]["address"] == address
    calls = [e for e in lines if e["event"] == "call"]
    assert [c.get("fault") for c in calls[:2]] == ["error=UNAVAILABLE"] * 2
    assert all(c["method"] == "GetCells" for c in calls)
    assert "fault" not in calls[-1]
    assert lines[-1] == {"time": lines[-1]["time"], "event": "stopping", "signal": "SIGTERM"}
