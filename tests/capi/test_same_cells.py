"""Every binding must route the README's example requests to the same cells as the CLI."""
import json
import os
import subprocess

CLI = os.environ["CELLROUTE_CLI"]
EXAMPLES = os.environ["CELLROUTE_EXAMPLES"]
C_ROUTER = os.environ["CELLROUTE_C_ROUTE_STDIN"]


def requests():
    with open(os.path.join(EXAMPLES, "requests.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def cli_cells():
    out = subprocess.run([CLI, "route", os.path.join(EXAMPLES, "requests.jsonl")],
                         capture_output=True, text=True, check=True).stdout
    return [(d["cell_id"] or 0, d["address"]) for d in map(json.loads, out.splitlines())]


def test_c_routes_like_the_cli():
    lines = []
    for r in requests():
        path, _, query = r["path"].partition("?")
        fields = [r.get("method", "GET"), path, r.get("query", query)]
        fields += [f"{k}: {v}" for k, v in r.get("headers", {}).items()]
        lines.append("\t".join(fields))
    out = subprocess.run([C_ROUTER], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, check=True).stdout
    c = [(int(a), b if b else "") for a, _, b in (l.partition(" ") for l in out.splitlines())]
    expected = cli_cells()
    assert len(c) == len(expected) == 14
    assert c == expected
