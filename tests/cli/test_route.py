import json
import os

from conftest import json_lines

# What each line of examples/requests.jsonl must become with the embedded defaults.
EXPECTED = [
    # (rule, type, value, cell_id, source, fallback)
    ("top_level_namespace", "route", "gitlab-org", 2, "claims_file", None),
    ("organization_path", "organization_path", "acme-corp", 3, "claims_file", None),
    ("top_level_namespace", "route", "acme", 3, "claims_file", None),
    ("session_token_header_runner_token", "CELL_ID", "2", 2, "cell_list", None),
    ("session_token_header_private_token", "CELL_ID", "3", 3, "cell_list", None),
    ("session_token_header_authorization_bearer", "CELL_ID", "2", 2, "cell_list", None),
    ("session_cookie", "SESSION_PREFIX", "cell-2", 2, "cell_list", None),
    ("force_cell_cookie", "SESSION_PREFIX", "cell-3", 3, "cell_list", None),
    ("session_cookie", "SESSION_PREFIX", "cell-3", 3, "cell_list", None),
    ("fallback", "", "", 1, "cell_list", None),
    ("session_cookie", "SESSION_PREFIX", "cell-9", 1, "fallback", "unknown_cell"),
    ("session_token_header_private_token", "CELL_ID", "99", 1, "fallback", "unknown_cell"),
    ("fallback", "", "", 1, "cell_list", None),
]


def test_examples_route_as_documented(cellroute, examples):
    r = cellroute("route", os.path.join(examples, "requests.jsonl"))
    assert r.returncode == 0, r.stderr
    out = json_lines(r.stdout)
    assert len(out) == len(EXPECTED) + 1
    for n, (d, want) in enumerate(zip(out, EXPECTED), start=1):
        rule, typ, value, cell, source, fallback = want
        assert d["line"] == n
        assert (d["rule"], d["type"], d["value"], d["cell_id"], d["source"]) == \
            (rule, typ, value, cell, source), d
        assert d.get("fallback") == fallback, d
        assert d["address"] == f"{'legacy' if cell == 1 else f'cell-{cell}'}.gitlab.example.com:443"
    rejected = out[-1]
    assert rejected["result"] == "rejected"
    assert rejected["status"] == 400
    assert rejected["cell_id"] is None
    assert "routable token" in rejected["reason"]


def test_table_output(cellroute, examples):
    r = cellroute("route", "--table", os.path.join(examples, "requests.jsonl"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["#", "request", "rule", "classification"]
    assert set(lines[1]) <= {"-", " "}
    row = lines[2].split()
    assert row[:6] == ["1", "GET", "/gitlab-org/gitlab/-/issues", "top_level_namespace", "route",
                       "gitlab-org"]
    assert "cell-2.gitlab.example.com:443" in lines[2]
    assert "rejected (400)" in lines[-1]


def test_one_request_from_flags(cellroute):
    r = cellroute("route", "--path", "/api/v4/projects", "--cookie", "_gitlab_session=cell-3-ab12")
    assert r.returncode == 0, r.stderr
    (d,) = json_lines(r.stdout)
    assert d["rule"] == "session_cookie"
    assert d["cell_id"] == 3
    assert "line" not in d

    r = cellroute("route", "--path", "/x", "-H", "Private-Token: nope", "--table")
    assert r.returncode == 0
    assert "fallback" in r.stdout


def test_requests_from_stdin(cellroute):
    stdin = '{"path": "/gitlab-org/x"}\n\n{"path": "/o/default/y", "method": "POST"}\n'
    r = cellroute("route", "-", stdin=stdin)
    assert r.returncode == 0, r.stderr
    out = json_lines(r.stdout)
    assert [(d["line"], d["cell_id"]) for d in out] == [(1, 2), (3, 1)]


def test_bad_request_lines_are_reported_and_the_rest_still_route(cellroute):
    stdin = "\n".join([
        '{"path": "/gitlab-org/x"}',
        '{"path": "/x", ',
        '["not", "an", "object"]',
        '{"path": "/x", "headers": {"a": 1}}',
        '{"pth": "/x"}',
        '{"path": "/acme/y"}',
    ]) + "\n"
    r = cellroute("route", "-", stdin=stdin)
    assert r.returncode == 1
    out = json_lines(r.stdout)
    assert [d["line"] for d in out] == [1, 2, 3, 4, 5, 6]
    assert out[0]["cell_id"] == 2 and out[5]["cell_id"] == 3
    assert all("error" in d for d in out[1:5])
    err = r.stderr.splitlines()
    assert err[0].startswith("<stdin>:2: ")
    assert "unexpected end of input" in err[0] or "syntax error" in err[0]
    assert err[1] == "<stdin>:3: expected a JSON object"
    assert err[2].startswith("<stdin>:4: headers.a: expected a string")
    assert err[3].startswith("<stdin>:5: unknown key 'pth'")


def test_explain(cellroute):
    r = cellroute("explain", "--path", "/unknown-group/x", "--cookie", "_gitlab_session=cell-2-a")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "force_cell_cookie: cookie 'force-cell' is absent" in text
    assert "no cell owns route 'unknown-group'" in text
    assert "MATCH  session_cookie: matched" in text
    assert "=> SESSION_PREFIX cell-2 -> cell 2" in text

    r = cellroute("explain", "--json", "--path", "/api/v4/x")
    (j,) = json_lines(r.stdout)
    results = {t["rule"]: t["result"] for t in j["trace"]}
    assert results["top_level_namespace"] == "no_match"
    assert results["fallback"] == "matched"
    assert j["decision"]["cell_id"] == 1


def test_custom_configuration_files(cellroute, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([
        {"id": "to_two", "match": {"type": "header", "name": "x-two"}, "action": "classify",
         "classify": {"type": "CELL_ID", "value": "2"}},
        {"id": "rest", "action": "proxy"},
    ]))
    topo = tmp_path / "config.toml"
    topo.write_text('[[cells]]\nid = 10\naddress = "ten:1"\n[[cells]]\nid = 2\naddress = "two:1"\n')
    r = cellroute("route", "--rules", str(rules), "--topology", str(topo), "--path", "/",
                  "-H", "x-two: y")
    assert json_lines(r.stdout)[0]["address"] == "two:1"
    r = cellroute("route", "--rules", str(rules), "--topology", str(topo), "--path", "/")
    assert json_lines(r.stdout)[0]["address"] == "ten:1"
    # With a custom topology and no claims file, no claims apply.
    r = cellroute("route", "--topology", str(topo), "--path", "/gitlab-org/x")
    d = json_lines(r.stdout)[0]
    assert d["cell_id"] == 10 and d["rule"] == "fallback"


def test_configuration_errors_exit_2(cellroute, tmp_path):
    r = cellroute("route", "--rules", str(tmp_path / "missing.json"), "--path", "/")
    assert r.returncode == 2
    assert "missing.json: cannot open" in r.stderr
    r = cellroute("route", "--path", "/", str(tmp_path / "also-a-file"))
    assert r.returncode == 2
    r = cellroute("route", "--no-such-flag")
    assert r.returncode == 2
    r = cellroute()
    assert r.returncode == 2


def test_any_bytes_on_a_request_line_give_a_decision_or_that_line_s_error():
    # Invalid UTF-8 used to abort the CLI (type_error.316) and lose every line after it.
    import subprocess
    from conftest import CLI
    lines = (b'{"path":"/gitlab-org/x"}\n{"path":"/\xff"}\n{"path":"/acme/y"}\n'
             b'\xfe\xff\x00garbage\n{"path":"/help","headers":{"X":"\xc3"}}\n{"path":"/o/acme-corp"}\n')
    r = subprocess.run([CLI, "route", "-"], input=lines, capture_output=True, timeout=60)
    assert r.returncode == 1, r.stderr
    out = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
    assert [o.get("line") for o in out] == [1, 2, 3, 4, 5, 6]
    assert [o.get("cell_id") for o in out if "error" not in o] == [2, 3, 3]
    assert all("error" in out[i] for i in (1, 3, 4))


def test_no_topology_known_is_its_own_state_and_exit_code(cellroute, examples):
    r = cellroute("route", "--topology-service", "127.0.0.1:1", "--wait-ms", "100",
                  "--path", "/users/sign_in")
    assert r.returncode == 3, r.stderr
    d = json.loads(r.stdout)
    assert (d["fallback"], d["address"], d["cell_id"]) == ("no_topology", "", None)
    assert "no topology is known" in r.stderr
    assert "keeping the last good topology" not in r.stderr
