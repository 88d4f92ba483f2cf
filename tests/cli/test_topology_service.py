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
    assert "cell-2.gitlab.example.com:443" in snapshot.read_text()

    # The service unreachable: the snapshot serves, and the status says it is stale.
    r = cellroute("topology", "status", "--topology-service", "127.0.0.1:1", "--json",
                  "--snapshot", str(snapshot), "--wait-ms", "200")
    assert r.returncode == 1
    s = json.loads(r.stdout)
    assert s["state"] == "serving_stale" and s["topology_source"] == "snapshot"
    assert "UNAVAILABLE" in s["last_error"]
    r = cellroute("route", "--topology-service", "127.0.0.1:1", "--snapshot", str(snapshot),
                  "--wait-ms", "200", "--path", "/help", "--cookie", "_gitlab_session=cell-2-ab")
    assert json_lines(r.stdout)[0]["cell_id"] == 2
