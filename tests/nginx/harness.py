"""Real processes on loopback for the nginx module's tests and its benchmark: Debian's nginx
with ngx_http_cellroute_module loaded, echoing "cells", the dev Topology Service.

Nothing here knows the module's behaviour; the tests assert it.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NGINX = os.environ.get("CELLROUTE_NGINX", "/usr/sbin/nginx")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} is not listening on {port} after {timeout}s")


def loopback_topology(examples, ports, path):
    """examples/topology.toml with each cell's address replaced, in order, by 127.0.0.1:port."""
    text = open(os.path.join(examples, "topology.toml")).read()
    it = iter(ports)
    text = re.sub(r'(?m)^address = ".*"$', lambda m: f'address = "127.0.0.1:{next(it)}"', text)
    with open(path, "w") as f:
        f.write(text)
    return path


class _Cell(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        seen = {"cell": self.server.cell_id, "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()}}
        with self.server.lock:
            self.server.seen.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


class EchoCells:
    """Cells 1..n: HTTP servers that answer with their id and what they received."""

    def __init__(self, n=3):
        self.servers = []
        for cell_id in range(1, n + 1):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Cell)
            server.daemon_threads = True
            server.cell_id, server.seen, server.lock = cell_id, [], threading.Lock()
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)

    @property
    def ports(self):
        return [s.server_address[1] for s in self.servers]

    def requests_seen(self):
        return sum(len(s.seen) for s in self.servers)

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


class TopologyServer:
    """cellroute-topology-server on a free loopback port."""

    def __init__(self, binary, config, claims=None, faults=(), tls=None):
        """tls: (cert, key, client_ca) to require mTLS."""
        args = [binary, "--listen", "127.0.0.1:0", "--config", config, "--log-json"]
        if claims:
            args += ["--claims", claims]
        for f in faults:
            args += ["--fault", f]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1], "--tls-client-ca", tls[2]]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"topology server: {line!r}")
        self.address = line.split()[-1]

    def calls(self):
        """The calls it has received, from its --log-json lines."""
        self.log.seek(0)
        lines = [json.loads(l) for l in self.log.read().splitlines() if l.startswith("{")]
        return [l for l in lines if l.get("event") == "call"]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Nginx:
    """Debian's nginx in a scratch prefix with the module loaded, in the foreground."""

    def __init__(self, module, prefix, http, workers=1, listen_ports=(), main=""):
        self.module, self.prefix = os.path.abspath(module), os.path.abspath(prefix)
        self.listen_ports, self.main = list(listen_ports), main
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "error.log")
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.prefix, d), exist_ok=True)
        self.write(http, workers)
        self.proc = None

    def write(self, http, workers=1):
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the scratch files
        temp = "\n".join(f"  {name}_temp_path {self.prefix}/{d};" for name, d in
                         (("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fastcgi"),
                          ("uwsgi", "uwsgi"), ("scgi", "scgi")))
        with open(self.conf, "w") as f:
            f.write(f"""load_module {self.module};
{user}error_log {self.error_log} info;
pid {self.prefix}/nginx.pid;
daemon off;
worker_processes {workers};
{self.main}
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp}
{http}
}}
""")

    def command(self, *args):
        return subprocess.run([NGINX, "-p", self.prefix, "-c", self.conf, "-e", self.error_log,
                               *args], capture_output=True, text=True, timeout=60)

    def test(self):
        return self.command("-t")

    def start(self):
        self.proc = subprocess.Popen([NGINX, "-p", self.prefix, "-c", self.conf, "-e",
                                      self.error_log], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        try:
            for port in self.listen_ports:
                wait_for_port(port, self.proc, "nginx")
        except RuntimeError as e:
            raise RuntimeError(f"{e}:\n{self.log()}") from None
        return self

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def worker_pids(self):
        """The workers taking new requests (not those finishing theirs after a reload)."""
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return {int(l.split()[0]) for l in out.splitlines()
                if "worker process" in l and "shutting down" not in l}

    def stop(self):
        """Graceful stop (SIGQUIT: workers finish and exit); returns nginx's exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGQUIT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self):
        with open(self.error_log, errors="replace") as f:
            return f.read()


def send(port, method="GET", path="/", headers=None, query=None, timeout=10):
    """One HTTP request to nginx; returns (status, parsed JSON body or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        target = path + ("?" + query if query else "")
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body
    finally:
        conn.close()
