"""The Python binding, from the build tree, against the same behaviour as the C++ core."""
import json
import os
import subprocess
import threading
import time

import pytest

import cellroute
from cellroute import tokens

CLI = os.environ["CELLROUTE_CLI"]
EXAMPLES = os.environ["CELLROUTE_EXAMPLES"]
PUBLISHED = "EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3"


@pytest.fixture(scope="module")
def router():
    return cellroute.Router()


def test_examples_route_to_the_same_cells_as_the_cli(router):
    with open(os.path.join(EXAMPLES, "requests.jsonl")) as f:
        requests = [json.loads(line) for line in f if line.strip()]
    cli = subprocess.run([CLI, "route", os.path.join(EXAMPLES, "requests.jsonl")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    expected = [(d["rule"], d["cell_id"], d["address"]) for d in map(json.loads, cli)]
    mine = []
    for r in requests:
        d = router.route(method=r.get("method", "GET"), host=r.get("host", ""), path=r["path"],
                         query=r.get("query", ""), headers=r.get("headers"))
        mine.append((d.rule, d.cell_id, d.address))
    assert mine == expected
    batch = router.route_batch(requests)
    assert [(d.rule, d.cell_id, d.address) for d in batch] == expected


def test_decision_fields_and_repr(router):
    d = router.route(path="/gitlab-org/gitlab/-/issues?state=opened")
    assert (d.rule, d.result, d.action, d.type, d.value) == \
        ("top_level_namespace", "matched", "classify", "route", "gitlab-org")
    assert (d.cell_id, d.address, d.source, d.fallback) == \
        (2, "cell-2.gitlab.example.com:443", "claims_file", None)
    assert d.variables == {"route": "gitlab-org"}
    assert repr(d) == ("<Decision rule=top_level_namespace matched route=gitlab-org cell=2 "
                       "cell-2.gitlab.example.com:443 source=claims_file>")
    assert json.loads(d.to_json())["cell_id"] == 2


def test_headers_and_cookies_in_either_form(router):
    assert router.route(path="/help", headers={"Cookie": "_gitlab_session=cell-3-ab"}).cell_id == 3
    assert router.route(path="/help", headers=[("cookie", "_gitlab_session=cell-2-ab")]).cell_id == 2
    assert router.route(path="/help", cookies={"force-cell": "cell-3"}).cell_id == 3
    unknown = router.route(path="/help", cookies=[("_gitlab_session", "cell-9-x")])
    assert (unknown.cell_id, unknown.fallback) == (1, "unknown_cell")
    with pytest.raises(TypeError):
        router.route(path="/", headers={"a": 1})


def test_rejected_token(router):
    token = tokens.encode({"c": 2}, prefix="glpat-", random=bytes(16))
    bad = token[:-9] + "zz" + token[-7:]
    d = router.route(path="/api/v4/user", headers={"Private-Token": bad})
    assert d.result == "rejected" and d.cell_id is None and "routable token" in d.reason
    ok = router.route(path="/api/v4/user", headers={"Private-Token": token})
    assert ok.cell_id == 2


def test_one_exception_class_per_code(tmp_path):
    with pytest.raises(cellroute.InvalidError) as e:
        cellroute.Router(rules='[{"id": "r1", "action": "nope"}]')
    assert "rule 'r1' (#1): action" in str(e.value) and e.value.code == -1
    with pytest.raises(cellroute.UnavailableError) as e:
        cellroute.Router.from_files(rules=str(tmp_path / "missing.json"))
    assert e.value.code == -3
    assert issubclass(cellroute.UnavailableError, cellroute.CellrouteError)
    with pytest.raises(cellroute.InvalidError):
        cellroute.Router(topology="[[cells]]\nid = 1\n")
    with pytest.raises(cellroute.InvalidError):
        tokens.decode("glpat-nope")


def test_from_files_and_strings(tmp_path):
    rules = '[{"id": "all", "action": "classify", "classify": {"type": "CELL_ID", "value": "7"}}]'
    topo = '[[cells]]\nid = 1\naddress = "one:1"\n[[cells]]\nid = 7\naddress = "seven:1"\n'
    assert cellroute.Router.from_strings(rules=rules, topology=topo).route().address == "seven:1"
    (tmp_path / "r.json").write_text(rules)
    (tmp_path / "c.toml").write_text(topo)
    r = cellroute.Router.from_files(rules=str(tmp_path / "r.json"), topology=str(tmp_path / "c.toml"))
    assert r.route(path="/x").cell_id == 7


def test_tokens():
    assert tokens.decode(PUBLISHED) == {"o": 1}
    t = tokens.encode({"o": 1, "c": 2}, prefix="glrt-", random=bytes(range(16)))
    assert t == tokens.encode({"c": 2, "o": 1}, prefix="glrt-", random=bytes(range(16)))
    assert tokens.decode(t) == {"c": 2, "o": 1}
    assert tokens.encode({"c": 1}) != tokens.encode({"c": 1})
    with pytest.raises(cellroute.InvalidError):
        tokens.encode({"c": 1}, random=b"short")


def test_explain_and_status(router):
    e = router.explain(path="/unknown-group/x")
    rules = {t["rule"]: t for t in e["trace"]}
    assert "no cell owns route 'unknown-group'" in rules["top_level_namespace"]["reason"]
    assert e["decision"]["rule"] == "fallback"
    assert router.status() == {"state": "static"}


def test_many_threads_share_a_router(router):
    paths = ["/gitlab-org/x", "/o/acme-corp/y", "/acme/z", "/users/sign_in"]
    want = [router.route(path=p).cell_id for p in paths]
    errors = []

    def work():
        for i in range(2000):
            if router.route(path=paths[i % 4]).cell_id != want[i % 4]:
                errors.append(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and want == [2, 3, 3, 1]


def test_waiting_on_the_service_releases_the_gil():
    topo = open(os.path.join(EXAMPLES, "topology.toml")).read()
    r = cellroute.Router(topology_service="127.0.0.1:1", topology=topo)
    assert r.status()["state"] == "serving_stale"
    ticks = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.05)
    before = ticks[0]
    start = time.monotonic()
    d = r.route(path="/gitlab-org/x", wait=0.4)
    waited = time.monotonic() - start
    during = ticks[0] - before
    stop.set()
    t.join()
    assert d.cell_id == 1 and d.fallback in ("unavailable", "unknown_claim")
    assert waited >= 0.05
    # Python ran while the call waited: the GIL was released.
    assert during > 1000


# --- Safe to embed -----------------------------------------------------------------------------

def _churn_heap():
    junk = [("Z" * n) * 3 for n in range(1, 2000)]
    return len(junk)


def test_a_decision_outlives_its_router():
    # The README's own pattern: the Router is a temporary.
    import gc
    d = cellroute.Router().route(path="/gitlab-org/gitlab")
    gc.collect()
    _churn_heap()
    assert d.rule == "top_level_namespace"
    assert json.loads(d.to_json())["rule"] == "top_level_namespace"
    assert d.variables == {"route": "gitlab-org"}


def test_a_decision_held_by_the_caller_is_never_routed_into_again(router):
    # route() reuses the Decision object it returned last once nothing else refers to it; a
    # decision the caller keeps, or watches through a weak reference, must stay as it was.
    import weakref
    kept = router.route(path="/gitlab-org/gitlab")
    other = router.route(path="/gitlab-com/www")
    assert other is not kept
    assert kept.variables == {"route": "gitlab-org"}
    assert other.variables == {"route": "gitlab-com"}

    # Only weakly referenced, it is let go rather than routed into: the weak reference never
    # shows another request's decision.
    watched = router.route(path="/gitlab-org/gitlab")
    ref = weakref.ref(watched)
    del watched
    assert ref().variables == {"route": "gitlab-org"}
    router.route(path="/gitlab-com/www")
    assert ref() is None


def test_a_decision_dropped_before_the_next_route_is_reused(router):
    # What makes route() cheap: nothing allocated when the caller lets each decision go.
    first = router.route(path="/gitlab-org/gitlab")
    first_id = id(first)
    del first
    again = router.route(path="/gitlab-com/www")
    assert id(again) == first_id
    assert again.rule == "top_level_namespace" and again.variables == {"route": "gitlab-com"}


def test_route_batch_owns_what_it_reads_while_the_gil_is_released(router):
    # Another thread replaces the header values while the batch routes without the GIL: each
    # decision must be one of the two values' cells, never freed memory or a third cell.
    headers = {"Cookie": "_gitlab_session=cell-2-" + "a" * 64}
    requests = [{"path": "/help", "headers": headers} for _ in range(400)]
    stop = threading.Event()

    def replace():
        i = 0
        while not stop.is_set():
            cell = 2 + i % 2
            headers["Cookie"] = f"_gitlab_session=cell-{cell}-" + str(i) * 64
            i += 1

    t = threading.Thread(target=replace)
    t.start()
    try:
        cells = set()
        for _ in range(20):
            cells.update(d.cell_id for d in router.route_batch(requests))
    finally:
        stop.set()
        t.join()
    assert cells <= {2, 3}


def test_route_wait_owns_what_it_reads():
    topo = open(os.path.join(EXAMPLES, "topology.toml")).read()
    r = cellroute.Router(topology_service="127.0.0.1:1", topology=topo)
    headers = {"X": "y"}
    stop = threading.Event()

    def replace():
        i = 0
        while not stop.is_set():
            headers["X"] = str(i) * 100
            i += 1

    t = threading.Thread(target=replace)
    t.start()
    try:
        for _ in range(3):
            d = r.route(path="/gitlab-org/x", headers=headers, wait=0.05)
            assert d.cell_id == 1
    finally:
        stop.set()
        t.join()


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), -1.0])
def test_wait_must_be_a_finite_number_of_seconds(router, wait):
    with pytest.raises(ValueError):
        router.route(path="/gitlab-org/x", wait=wait)


def test_a_huge_wait_is_bounded_not_undefined():
    topo = open(os.path.join(EXAMPLES, "topology.toml")).read()
    r = cellroute.Router(topology_service="127.0.0.1:1", topology=topo)
    start = time.monotonic()
    # The claim's fetch fails against a closed port, so the wait ends with it.
    d = r.route(path="/gitlab-org/x", wait=1e300)
    assert d.cell_id == 1 and time.monotonic() - start < 30


@pytest.mark.parametrize("which", ["rules", "topology", "claims"])
def test_empty_text_is_an_error_not_the_defaults(which):
    with pytest.raises(cellroute.InvalidError, match="empty"):
        cellroute.Router(**{which: ""})


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError):
        cellroute.Router(rules=123)
    with pytest.raises(TypeError):
        cellroute.Router().route(path=123)
    with pytest.raises(TypeError):
        cellroute.Router().route_batch([("GET",)])


def test_tokens_refuse_what_rails_refuses():
    with pytest.raises(cellroute.InvalidError, match="Invalid routing keys"):
        tokens.encode({"\xff": 2})
    with pytest.raises(cellroute.InvalidError, match="At least one routing key"):
        tokens.encode({"p": 2})


PUMA_LIKE = r"""
import os, sys, cellroute
r = cellroute.Router(topology_service=sys.argv[1], topology=open(sys.argv[2]).read())
assert r.route(path="/gitlab-org/x", wait=2).cell_id == 2
for cycle in range(3):
    pids = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            # gRPC cannot be used in a child of a process that started it: the child routes
            # from the parent's table as it was at the fork (gitlab-org was answered there),
            # and a claim it lacks decides as unavailable. Never a hang, never a crash.
            known = r.route(path="/gitlab-org/x", wait=0.5)
            unknown = r.route(path="/acme/y", wait=0.5)
            ok = ((known.cell_id, known.source) == (2, "route_table")
                  and (unknown.cell_id, unknown.fallback) == (1, "unavailable")
                  and r.status()["state"] == "frozen")
            # A new router with a service refuses to start gRPC here, saying why.
            try:
                cellroute.Router(topology_service=sys.argv[1])
                ok = False
            except cellroute.UnavailableError as e:
                ok = ok and "forked after its parent started gRPC" in str(e)
            os._exit(0 if ok else 1)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    assert codes == [0] * 8, codes
print("ok")
"""


def test_forked_children_of_a_router_that_used_the_service_route_and_end():
    server = os.environ["CELLROUTE_TOPOLOGY_SERVER"]
    proc = subprocess.Popen([server, "--listen", "127.0.0.1:0", "--config",
                             f"{EXAMPLES}/topology.toml", "--claims", f"{EXAMPLES}/claims.json"],
                            stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().split()[-1]
        out = subprocess.run(["/usr/bin/python3", "-c", PUMA_LIKE, address,
                              f"{EXAMPLES}/topology.toml"],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_route_batch_takes_any_mapping_and_splits_the_query(router):
    import collections

    class Request(collections.abc.Mapping):
        def __init__(self, **kw):
            self._kw = kw

        def __getitem__(self, k):
            return self._kw[k]

        def __iter__(self):
            return iter(self._kw)

        def __len__(self):
            return len(self._kw)

    ds = router.route_batch(iter([Request(path="/gitlab-org/gitlab?x=1"),
                                  {"path": "/help", "cookies": {"force-cell": "cell-3"}}]))
    assert [(d.rule, d.cell_id) for d in ds] == [("top_level_namespace", 2),
                                                  ("force_cell_cookie", 3)]
    with pytest.raises(TypeError, match="mapping"):
        router.route_batch([["path", "/"]])


def test_route_batch_releases_the_gil_for_the_whole_batch():
    # Rules that make routing slow (400 regexes searched through a 256-byte header) so that a
    # batch spends its time routing, not copying. A Python thread notes the longest time it
    # went without running: holding the GIL, the batch would stop it for the whole routing;
    # releasing it, the thread runs through the batch and its longest pause is a fraction.
    rules = {"rules": [{"id": f"slow{i}", "action": "proxy",
                        "match": {"type": "header", "name": "x-long",
                                  "regex_value": f"(a|b)*{i}z$"}} for i in range(400)]}
    router = cellroute.Router(rules=json.dumps(rules))
    headers = {"X-Long": "ab" * 128}
    requests = [{"path": "/", "headers": headers}] * 1000
    for _ in range(2):  # RE2's DFAs and the allocator's first growth (page faults) are not
        router.route_batch(requests)  # what is measured
    longest, running, stop = [0.0], threading.Event(), threading.Event()

    def watch():
        last = time.perf_counter()
        running.set()
        while not stop.is_set():
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    t = threading.Thread(target=watch)
    t.start()
    running.wait()
    try:
        time.sleep(0.01)
        longest[0] = 0.0
        start = time.perf_counter()
        decisions = router.route_batch(requests)
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        t.join()
    assert len(decisions) == 1000 and decisions[0].rule == ""
    assert seconds > 0.01  # long enough for the comparison to mean something
    assert longest[0] < 0.5 * seconds


def test_errors_are_the_standard_exceptions_they_mean(tmp_path):
    with pytest.raises(ValueError):  # InvalidError
        cellroute.Router(rules="[")
    with pytest.raises(OSError) as e:  # UnavailableError: a file that is not there
        cellroute.Router.from_files(rules=str(tmp_path / "missing.json"))
    assert isinstance(e.value, cellroute.UnavailableError)
    assert "missing.json" in str(e.value) and e.value.code == -3
    assert issubclass(cellroute.DeadlineExceededError, TimeoutError)
    assert issubclass(cellroute.NotFoundError, LookupError)
    assert issubclass(cellroute.InternalError, RuntimeError)
    # No name of the package shadows a builtin.
    import builtins
    assert not [n for n in cellroute.__all__ if hasattr(builtins, n)]


def test_decisions_compare_by_what_they_show_and_become_dicts():
    router = cellroute.Router()
    a = router.route(path="/gitlab-org/gitlab")
    b = router.route(path="/gitlab-org/gitlab")
    c = router.route(path="/acme/x")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert a != "not a decision"
    d = a.to_dict()
    assert d == json.loads(a.to_json())
    assert (d["cell_id"], d["rule"]) == (a.cell_id, a.rule)


def test_every_public_class_and_method_has_a_docstring():
    missing = []
    for name in cellroute.__all__:
        obj = getattr(cellroute, name)
        if not getattr(obj, "__doc__", None):
            missing.append(name)
        if isinstance(obj, type):
            for attr, value in vars(obj).items():
                if attr.startswith("_") or not (callable(value) or isinstance(value, (property, classmethod))):
                    continue
                if not getattr(value, "__doc__", None):
                    missing.append(f"{name}.{attr}")
    assert missing == []
