"""Token commands, checked against an independent Python rendition of GitLab's algorithm."""
import base64
import zlib

from conftest import json_lines

PUBLISHED = "EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3"


def base36(n):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def rails_encode(prefix, fields, random_bytes):
    """What GitLab's Rails does when it mints a routable token."""
    payload = "\n".join(f"{k}:{base36(v)}" for k, v in sorted(fields.items())).encode()
    raw = random_bytes + payload + bytes([len(payload)])
    b = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    body = f"{prefix}{b}.01.{base36(len(b)).rjust(2, '0')}"
    return body + base36(zlib.crc32(body.encode())).rjust(7, "0")


def test_decode_published_example(cellroute):
    r = cellroute("token", "decode", PUBLISHED, "--json")
    assert r.returncode == 0, r.stderr
    assert json_lines(r.stdout) == [{"o": 1}]
    r = cellroute("token", "decode", PUBLISHED)
    assert r.stdout == "o = 1\n"


def test_not_routable(cellroute):
    for bad in [PUBLISHED[:-1] + "4", "glpat-abc", "", PUBLISHED.replace(".01.", ".02.")]:
        r = cellroute("token", "decode", bad, "--json")
        assert r.returncode == 1, bad
        j = json_lines(r.stdout)[0]
        assert j["routable"] is False
        assert "not routable" in r.stderr


def test_encode_is_bit_exact_with_gitlab(cellroute):
    random_hex = "00112233445566778899aabbccddeeff"
    fields = {"o": 1, "c": 2, "g": 93, "u": 1000000000001, "t": 1}
    args = [f"{k}={v}" for k, v in fields.items()]
    r = cellroute("token", "encode", "--prefix", "glrt-", "--random", random_hex, *args)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token == rails_encode("glrt-", fields, bytes.fromhex(random_hex))
    d = json_lines(cellroute("token", "decode", token, "--json").stdout)[0]
    assert d == fields
    j = json_lines(cellroute("token", "encode", "--json", "--random", random_hex, "o=1").stdout)[0]
    assert j["token"] == rails_encode("", {"o": 1}, bytes.fromhex(random_hex))


def test_encode_without_random_is_fresh_and_valid(cellroute):
    a = cellroute("token", "encode", "c=5").stdout.strip()
    b = cellroute("token", "encode", "c=5").stdout.strip()
    assert a != b
    # A token may start with "-" (one in 64 do): after "--" it is never taken for an option.
    assert json_lines(cellroute("token", "decode", "--json", "--", a).stdout) == [{"c": 5}]


def test_encode_usage_errors(cellroute):
    assert cellroute("token", "encode", "--random", "abc", "c=1").returncode == 2
    assert cellroute("token", "encode", "c=x").returncode == 2
    assert cellroute("token", "encode", "c").returncode == 2
    r = cellroute("token", "encode", "c=-1")
    assert r.returncode == 1 and "negative" in r.stderr
    r = cellroute("token", "encode", "--prefix", "x" * 21, "c=1")
    assert r.returncode == 1 and "prefix" in r.stderr


def test_encode_refuses_what_rails_refuses(cellroute):
    import subprocess
    from conftest import CLI
    # A binary key used to mint a token whose decode then aborted the CLI.
    r = subprocess.run([CLI, "token", "encode", "--prefix", "glpat-", b"\xff=2"],
                       capture_output=True, timeout=60)
    assert r.returncode == 1
    assert b"Invalid routing keys" in r.stderr
    r = cellroute("token", "encode", "p=2")
    assert r.returncode == 1 and "At least one routing key must be present" in r.stderr
    r = cellroute("token", "encode", "q=2", "o=1")
    assert r.returncode == 1 and "Invalid routing keys: :q" in r.stderr
