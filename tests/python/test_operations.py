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


class Events:
    """Collects what on_event receives, and on which threads."""

    def __init__(self):
        self.events = []
        self.threads = set()
        self.cond = threading.Condition()

    def __call__(self, event):
        with self.cond:
            self.events.append(event)
            self.threads.add(threading.get_ident())
            self.cond.notify_all()

    def wait_for(self, n, timeout=5):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= n, timeout), self.events
            return list(self.events)


def test_on_event_receives_reloads_as_dicts_on_another_thread(tmp_path):
    got = Events()
    router = cellroute.Router(rules=RULES % "a", topology=TOPOLOGY % "a", on_event=got)
    router.reload(rules=RULES % "b", topology=TOPOLOGY % "b")
    with pytest.raises(cellroute.InvalidError):
        router.reload(rules="[", topology_path=str(tmp_path / "missing.toml"))
    first, second = got.wait_for(2)
    assert first["event"] == "reload_succeeded"
    assert first["time"].endswith("Z")
    assert second["event"] == "reload_failed"
    assert second["code"] == "invalid"
    assert second["count"] == 2
    assert "missing.toml" in second["message"]
    assert threading.get_ident() not in got.threads


def test_an_on_event_that_raises_goes_to_unraisablehook_and_events_keep_coming(monkeypatch):
    seen = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: seen.append(u.exc_value))
    got = Events()

    def handler(event):
        got(event)
        raise RuntimeError("handler bug")

    router = cellroute.Router(on_event=handler)
    router.reload()
    router.reload()
    got.wait_for(2)
    with got.cond:  # the hook runs after the handler returns
        got.cond.wait_for(lambda: len(seen) >= 2, 5)
    assert [type(e) for e in seen] == [RuntimeError, RuntimeError]


def test_on_event_must_be_callable_and_is_set_at_construction_only():
    with pytest.raises(TypeError):
        cellroute.Router(on_event="print")
    with pytest.raises(TypeError):
        cellroute.Router().reload(on_event=print)


def test_a_router_with_events_is_collected_without_waiting_for_its_thread():
    import gc
    import time
    got = Events()
    router = cellroute.Router(on_event=got)
    for _ in range(50):
        router.reload()
    started = time.monotonic()
    del router
    gc.collect()
    # Freeing delivers what was queued; the handler takes the GIL, which freeing released.
    assert time.monotonic() - started < 1.5
    assert len(got.wait_for(50)) == 50


def test_events_in_a_forked_child_come_from_a_new_thread_with_the_same_handler():
    got = Events()
    router = cellroute.Router(on_event=got)
    router.reload()
    got.wait_for(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's event thread is not here
        try:
            os.close(read)
            router.reload()
            events = got.wait_for(2)
            os.write(write, json.dumps([e["event"] for e in events]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as r:
        child_events = json.loads(r.read() or "null")
    os.waitpid(pid, 0)
    assert child_events == ["reload_succeeded", "reload_succeeded"]


def test_events_queued_at_exit_are_delivered_and_the_interpreter_exits_cleanly():
    import subprocess
    import sys
    code = (
        "import cellroute, sys\n"
        "r = cellroute.Router(on_event=lambda e: print(e['event'], flush=True))\n"
        "for _ in range(20): r.reload()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["reload_succeeded"] * 20
