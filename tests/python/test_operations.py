"""Operating a router while it runs: metrics read by a real Prometheus parser, hot reload."""
import collections
import json
import os
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

import cellroute
from cellroute import tokens

EXAMPLES = os.environ["CELLROUTE_EXAMPLES"]


def corrupt_token():
    token = tokens.encode({"c": 2}, prefix="glpat-", random=bytes(16))
    return token[:-9] + "zz" + token[-7:]


def samples(router):
    """{(sample name, frozenset of labels): value} as prometheus_client parses the text."""
    out = {}
    for family in text_string_to_metric_families(router.metrics()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def decisions_by(parsed, *keys):
    totals = collections.Counter()
    for (name, labels), value in parsed.items():
        if name == "cellroute_decisions_total":
            labels = dict(labels)
            totals[tuple(labels[k] for k in keys)] += value
    return totals


def examples():
    with open(os.path.join(EXAMPLES, "requests.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_metrics_parse_and_count_what_was_routed():
    router = cellroute.Router()
    requests = examples()
    expected, rejected = collections.Counter(), 0

    def count(d):
        nonlocal rejected
        expected[(d.rule or "", d.source, d.fallback or "none")] += 1
        rejected += d.result == "rejected"

    for _ in range(3):
        for r in requests:
            count(router.route(method=r.get("method", "GET"), path=r["path"], headers=r.get("headers")))
    for d in router.route_batch(requests):
        count(d)
    d = router.route(path="/api/v4/user", headers={"Private-Token": corrupt_token()})
    assert d.result == "rejected"
    count(d)

    parsed = samples(router)
    assert decisions_by(parsed, "rule", "source", "fallback") == expected
    assert parsed[("cellroute_rejected_requests_total", frozenset({("reason", "invalid_input")}))] \
        == rejected
    # One decision in 64 per thread is timed: at most as many as were routed.
    timed = parsed[("cellroute_route_duration_seconds_count", frozenset())]
    assert 0 <= timed <= sum(expected.values())
    assert parsed[("cellroute_route_table_entries", frozenset({("kind", "static")}))] > 0
    info = [labels for (name, labels) in parsed if name == "cellroute_topology_info"]
    assert len(info) == 1 and dict(info[0])["source"] == "static"
    assert len(dict(info[0])["hash"]) == 16
    assert parsed[("cellroute_build_info", frozenset({("version", cellroute.__version__)}))] == 1


def test_the_same_cells_give_the_same_topology_hash():
    topo = "[[cells]]\nid = 1\naddress = \"one:1\"\n[[cells]]\nid = 2\naddress = \"two:1\"\n"
    other = "[[cells]]\nid = 1\naddress = \"one:1\"\n[[cells]]\nid = 2\naddress = \"two:2\"\n"

    def topology_hash(text):
        for (name, labels) in samples(cellroute.Router(topology=text)):
            if name == "cellroute_topology_info":
                return dict(labels)["hash"]

    assert topology_hash(topo) == topology_hash("# same cells\n" + topo)
    assert topology_hash(topo) != topology_hash(other)


RULES = '[{"id": "%s", "action": "classify", "classify": {"type": "CELL_ID", "value": "5"}}]'
TOPOLOGY = '[[cells]]\nid = 1\naddress = "legacy:1"\n[[cells]]\nid = 5\naddress = "%s:5"\n'


def test_reload_swaps_rules_and_topology_together_while_threads_route():
    router = cellroute.Router(rules=RULES % "a", topology=TOPOLOGY % "a")
    seen, stop = collections.Counter(), threading.Event()

    def route():
        while not stop.is_set():
            for d in router.route_batch([{"path": "/"}] * 50):
                seen[(d.rule, d.address)] += 1

    threads = [threading.Thread(target=route) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(200):
        name = "ab"[i % 2]
        router.reload(rules=RULES % name, topology=TOPOLOGY % name)
    stop.set()
    for t in threads:
        t.join()
    assert set(seen) <= {("a", "a:5"), ("b", "b:5")}  # never a rule of one with cells of the other
    assert router.route(path="/").address == "b:5"
    parsed = samples(router)
    assert parsed[("cellroute_reloads_total", frozenset({("result", "success")}))] == 200
    routed = decisions_by(parsed, "rule")
    assert routed[("a",)] + routed[("b",)] == sum(seen.values()) + 1


def test_a_bad_reload_changes_nothing_and_names_every_error(tmp_path):
    router = cellroute.Router(rules=RULES % "a", topology=TOPOLOGY % "a")
    rules = tmp_path / "rules.json"
    rules.write_text('[{"id": "b",\n  "action" "classify"}]')
    with pytest.raises(cellroute.InvalidError) as e:
        router.reload(rules_path=str(rules), topology='[[cells]]\nid = "one"\n')
    message = str(e.value)
    assert f"{rules}:2:" in message
    assert "<topology>:2:" in message
    with pytest.raises(cellroute.UnavailableError):  # as when a router is built from it
        router.reload(rules_path=str(tmp_path / "missing.json"))
    d = router.route(path="/")
    assert (d.rule, d.address) == ("a", "a:5")
    parsed = samples(router)
    assert parsed[("cellroute_reloads_total", frozenset({("result", "failure")}))] == 2
    assert parsed[("cellroute_reloads_total", frozenset({("result", "success")}))] == 0
