"""make bench-nginx: wrk against Debian's nginx routing the request mix of examples/requests.jsonl
to three cells, configured three ways, in the same run:

  plain      nginx alone: `map` on the cookies and the path, as an operator would write without
             cellroute (it cannot decode tokens or ask a Topology Service: those go to the
             legacy cell)
  cellroute  ngx_http_cellroute_module on the files (rules, topology, claims)
  service    the module with the dev Topology Service: claims are asked once, then cached

and, for the module's own cost per request, without proxying (empty_gif answers):

  bare            no routing
  bare+cellroute  `cellroute on` and $cellroute_address in a response header

The cells are server blocks of the same nginx answering 200, so the front and the cells share
one worker and the router's cost shows. Rounds are interleaved; the medians are reported, with
cellroute's throughput as a ratio of plain's (goal: >= 0.9) and the module's cost per request.

    nginx_bench.py MODULE CLI TOPOLOGY_SERVER EXAMPLES [--duration S] [--rounds N]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "nginx"))
from harness import Nginx, TopologyServer, free_port, loopback_topology, send  # noqa: E402

ROUTER_HEADERS = """
      proxy_set_header X-GitLab-HTTP-Router-Rule-Action $cellroute_rule_action;
      proxy_set_header X-GitLab-HTTP-Router-Rule-Type $cellroute_rule_type;"""


def cells_block(ports):
    """The cells, and an upstream block with kept-alive connections for each: a new connection
    per request would measure the kernel's TIME_WAIT handling, not routing."""
    return "\n".join(f"  server {{ listen 127.0.0.1:{p}; location / {{ return 200 'cell {i}\\n'; }} }}\n"
                     f"  upstream cell_{i} {{ server 127.0.0.1:{p}; keepalive 16; }}"
                     for i, p in enumerate(ports, 1))


PROXY = """
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://$cell_upstream;"""


def cellroute_http(port, ports, topology, examples, service=None):
    files = f"""
  cellroute_rules {examples}/rules.json;
  cellroute_topology {topology};"""
    if service:
        files += f"\n  cellroute_topology_service {service};"
    else:
        files += f"\n  cellroute_claims {examples}/claims.json;"
    upstreams = "\n".join(f"    {i} cell_{i};" for i in range(1, len(ports) + 1))
    return files + f"""
{cells_block(ports)}
  map $cellroute_cell_id $cell_upstream {{
{upstreams}
    default cell_1;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      cellroute on;{ROUTER_HEADERS}{PROXY}
    }}
  }}"""


def bare_http(port, ports, topology, examples, routed):
    """No proxying: the module's own cost shows against the same server without it."""
    files = f"""
  cellroute_rules {examples}/rules.json;
  cellroute_topology {topology};
  cellroute_claims {examples}/claims.json;""" if routed else ""
    route = "cellroute on;\n      add_header X-Cell $cellroute_address;" if routed else ""
    return files + f"""
  server {{
    listen 127.0.0.1:{port};
    location / {{
      {route}
      empty_gif;
    }}
  }}"""


def plain_http(port, ports, examples):
    """The mix's cookie and path rules as maps: what cellroute's claims say, written out. The
    force-cell cookie is read from the Cookie header with a regex ($cookie_ cannot name a
    cookie with a hyphen)."""
    claims = json.load(open(os.path.join(examples, "claims.json")))
    cells = range(1, len(ports) + 1)
    by_prefix = "\n".join(f'    "~^cell-{i}-" cell_{i};' for i in cells)
    force = "\n".join(f'    "~(^|;\\s*)force-cell=cell-{i}(;|$)" cell_{i};' for i in cells)
    paths = [f'    "~^/o/{re.escape(v)}(/|$)" cell_{c};'
             for v, c in claims["organization_path"].items()]
    paths += [f'    "~^/{re.escape(v)}(/|$)" cell_{c};' for v, c in claims["route"].items()]
    nl = "\n"
    return f"""
  map $http_cookie $by_force {{
{force}
    default "";
  }}
  map $uri $by_path {{
{nl.join(paths)}
    default "";
  }}
  map $cookie__gitlab_session $by_session {{
{by_prefix}
    default "";
  }}
  map "$by_force|$by_path|$by_session" $cell_upstream {{
    "~^([^|]+)\\|" $1;
    "~^\\|([^|]+)\\|" $1;
    "~\\|([^|]+)$" $1;
    default cell_1;
  }}
{cells_block(ports)}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_set_header X-GitLab-HTTP-Router-Rule-Action classify;
      proxy_set_header X-GitLab-HTTP-Router-Rule-Type route;{PROXY}
    }}
  }}"""


def lua_mix(examples, cli, path):
    """A wrk script cycling through the mix, without the request cellroute rejects (plain nginx
    would proxy it, cellroute answers 400 at once: not the same work)."""
    requests = [json.loads(l) for l in open(os.path.join(examples, "requests.jsonl")) if l.strip()]
    decisions = subprocess.run([cli, "route", os.path.join(examples, "requests.jsonl")],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    lines = ["local reqs = {}"]
    for req, d in zip(requests, decisions):
        if json.loads(d)["result"] == "rejected":
            continue
        target = req["path"] + ("?" + req["query"] if req.get("query") else "")
        headers = {"Host": req.get("host", "localhost"), **req.get("headers", {})}
        fields = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        lines.append(f"reqs[#reqs + 1] = wrk.format({json.dumps(req.get('method', 'GET'))}, "
                     f"{json.dumps(target)}, {{{fields}}})")
    lines += ["local i = 0", "request = function()", "  i = i % #reqs + 1", "  return reqs[i]",
              "end"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(requests)


def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pids):
    """User + system CPU time the processes have used (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def run_wrk(nginx, port, script, duration, connections, proxied=True):
    """(requests/s, mean ms, p99 ms, worker CPU microseconds per request). wrk runs on the
    second core and the worker is pinned to the first; the worker's CPU time per request is
    the steadier figure on a shared machine, where throughput moves with the neighbours."""
    workers = nginx.worker_pids()
    before = cpu_seconds(workers)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}",
                          f"-d{duration}s", "--latency", "-s", script,
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         check=True).stdout
    cpu = cpu_seconds(workers) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = int(re.search(r"(\d+) requests in", out).group(1))
    mean = ms(re.search(r"^\s+Latency\s+(\S+)", out, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and proxied:  # empty_gif answers the mix's POST with 405
        raise RuntimeError(f"{errors.group(1)} responses were not 2xx:\n{out}")
    return rps, mean, p99, cpu * 1e6 / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("module")
    ap.add_argument("cli")
    ap.add_argument("server")
    ap.add_argument("examples")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    args.examples = os.path.abspath(args.examples)
    if not shutil.which("wrk"):
        sys.exit("bench-nginx: wrk is not installed (apt-get install wrk)")

    work = tempfile.mkdtemp(prefix="cellroute-bench-nginx-")
    ports = [free_port() for _ in range(3)]
    topology = loopback_topology(args.examples, ports, os.path.join(work, "topology.toml"))
    script = os.path.join(work, "mix.lua")
    lua_mix(args.examples, args.cli, script)
    service = TopologyServer(args.server, topology, os.path.join(args.examples, "claims.json"))
    configs = {}
    for name in ("plain", "cellroute", "service", "bare", "bare+cellroute"):
        port = free_port()
        http = {"plain": lambda: plain_http(port, ports, args.examples),
                "cellroute": lambda: cellroute_http(port, ports, topology, args.examples),
                "service": lambda: cellroute_http(port, ports, topology, args.examples,
                                                  service.address),
                "bare": lambda: bare_http(port, ports, topology, args.examples, False),
                "bare+cellroute": lambda: bare_http(port, ports, topology, args.examples,
                                                    True)}[name]()
        configs[name] = (Nginx(args.module, os.path.join(work, name), http, workers=1,
                               listen_ports=[port], main="worker_cpu_affinity 01;"), port)

    results = {name: [] for name in configs}
    try:
        for rnd in range(args.rounds):
            for name, (nginx, port) in configs.items():
                nginx.start()
                try:
                    # Every cell answers, and the service's claims are in the table.
                    proxied = not name.startswith("bare")
                    run_wrk(nginx, port, script, 1, args.connections, proxied)
                    results[name].append(run_wrk(nginx, port, script, args.duration,
                                                 args.connections, proxied))
                finally:
                    nginx.stop()
                rps, mean, p99, cpu = results[name][-1]
                print(f"round {rnd + 1} {name:14s} {rps:10.0f} req/s  mean {mean:.2f} ms  "
                      f"p99 {p99:.2f} ms  worker CPU {cpu:.1f} us/request", file=sys.stderr)
    finally:
        service.kill()
        shutil.rmtree(work, ignore_errors=True)

    med = {n: tuple(statistics.median(r[i] for r in rs) for i in range(4))
           for n, rs in results.items()}
    print(f"\nnginx, wrk -t1 -c{args.connections} -d{args.duration}s, 1 worker, median of "
          f"{args.rounds} rounds\n")
    print("| configuration | requests/s | mean latency | p99 latency | worker CPU per request "
          "| throughput vs baseline |")
    print("|---|---|---|---|---|---|")
    for name, base in (("plain", "plain"), ("cellroute", "plain"), ("service", "plain"),
                       ("bare", "bare"), ("bare+cellroute", "bare")):
        rps, mean, p99, cpu = med[name]
        print(f"| {name} | {rps:,.0f} | {mean:.2f} ms | {p99:.2f} ms | {cpu:.1f} us | "
              f"{rps / med[base][0]:.2f}x |")
    def paired(a, b):  # the median of the rounds' differences: each pair ran back to back
        return statistics.median(x[3] - y[3] for x, y in zip(results[a], results[b]))

    print(f"\nthe module's worker CPU per request, median of the rounds' differences: "
          f"{paired('bare+cellroute', 'bare'):+.1f} us without proxying (bare+cellroute - bare), "
          f"{paired('cellroute', 'plain'):+.1f} us with (cellroute - plain), "
          f"{paired('service', 'plain'):+.1f} us with the service (service - plain)")
    for name in ("cellroute", "service"):
        ratio = med[name][0] / med["plain"][0]
        cpu_ratio = med["plain"][3] / med[name][3]
        print(f"goal: {name} >= 0.9x plain nginx's throughput: "
              f"{'met' if ratio >= 0.9 else 'not met'} ({ratio:.2f}x; by worker CPU per "
              f"request {cpu_ratio:.2f}x)")


if __name__ == "__main__":
    main()
