import json

from conftest import json_lines


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_are_clean(cellroute):
    r = cellroute("validate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ruleset 8 rules, topology 3 cells")
    assert json_lines(cellroute("validate", "--json").stdout) == [{"ok": True, "errors": []}]


def test_each_class_of_bad_ruleset(cellroute, tmp_path):
    cases = {
        "syntax": ('[\n {"id": "a",\n  "action": }]', "syntax.json:3:13: syntax error"),
        "unknown_key": ('[{"id": "a", "action": "proxy", "colour": 1}]',
                        "rule 'a' (#1): unknown key 'colour'"),
        "wrong_type": ('[{"id": "a", "action": "proxy", "match": "header"}]',
                       "rule 'a' (#1): match: expected an object or an array of objects, got string"),
        "regex": ('[{"id": "re", "match": {"type": "path", "regex_value": "(unclosed"}, '
                  '"action": "proxy"}]', "rule 're' (#1): match.regex_value: invalid regex /(unclosed/: missing )"),
        "template": ('[{"id": "t", "match": {"type": "path", "regex_value": "^/(?<ns>[^/]+)"}, '
                     '"action": "classify", "classify": {"type": "route", "value": "${namespace}"}}]',
                     "rule 't' (#1): classify.value: template uses ${namespace}"),
        "duplicate": ('[{"id": "d", "action": "proxy"}, {"id": "d", "action": "proxy"}]',
                      "rule 'd' (#2): id: duplicate id 'd', first used by rule #1"),
    }
    for name, (text, expected) in cases.items():
        path = write(tmp_path, name + ".json", text)
        r = cellroute("validate", "--rules", path)
        assert r.returncode == 1, name
        assert path + ":" in r.stderr or path in r.stderr, name
        assert expected in r.stderr, (name, r.stderr)
        j = json_lines(cellroute("validate", "--json", "--rules", path).stdout)[0]
        assert j["ok"] is False and any(expected in e for e in j["errors"]), name


def test_every_error_is_listed(cellroute, tmp_path):
    rules = write(tmp_path, "rules.json", json.dumps([
        {"id": "a", "action": "nope"},
        {"id": "b", "action": "classify", "classify": {"type": "CELL_ID", "value": "${x}"}},
    ]))
    topo = write(tmp_path, "config.toml",
                 '[[cells]]\nid = 1\naddress = "a"\n[[cells]]\nid = 1\naddress = "b"\n'
                 'session_prefix = "p"\n[[cells]]\nid = 3\naddress = "c"\nsession_prefix = "p"\n')
    r = cellroute("validate", "--rules", rules, "--topology", topo)
    assert r.returncode == 1
    err = r.stderr
    assert "rule 'a'" in err and "rule 'b'" in err
    assert "duplicate cell id 1" in err
    assert 'duplicate session prefix "p"' in err
    assert err.rstrip().endswith("4 errors")


def test_bad_topology_and_claims(cellroute, tmp_path):
    topo = write(tmp_path, "config.toml", "[[cells]]\nid = 1\naddress = \"a\"\n[[cells]\n")
    r = cellroute("validate", "--topology", topo)
    assert r.returncode == 1
    assert topo + ":4:" in r.stderr

    good = write(tmp_path, "good.toml", '[[cells]]\nid = 1\naddress = "a"\n')
    claims = write(tmp_path, "claims.json", '{"route": {"x": 4}, "colour": {}}')
    r = cellroute("validate", "--topology", good, "--claims", claims)
    assert r.returncode == 1
    assert "route.x: cell 4 is not in the topology" in r.stderr
    assert "'colour': not a claim type" in r.stderr

    r = cellroute("validate", "--topology", topo, "--claims", claims)
    assert "not checked: the topology it refers to is invalid" in r.stderr
