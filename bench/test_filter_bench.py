"""Unit tests of the filter benchmark's pure parts: `python3 -m unittest discover -s bench`.

The Envoy configs are also checked by the real Envoy (`--mode validate`) when it is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import filter_bench as fb  # noqa: E402
import filter_setup as fs  # noqa: E402


def _tobit(x: int) -> int:
    """LuaJIT's bit.tobit: wrap to a signed 32-bit integer."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= (1 << 31) else x


def _lua_bucket_emulated(key: str) -> int:
    """The Lua filter's bucket_of, step by step as LuaJIT evaluates it (doubles + bit ops)."""
    h = _tobit(2166136261)
    for byte in key.encode():
        h = _tobit(h ^ byte)
        shifted = _tobit(h << 24)
        total = float(shifted) + float(h) * 403.0  # LuaJIT number arithmetic
        assert total == int(total) and abs(total) < 2**53, "must stay exact in a double"
        h = _tobit(int(total))
    if h < 0:
        h += 1 << 32
    return h % 10000


def _fnv1a32(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


class LuaFilterTest(unittest.TestCase):
    def test_bucket_arithmetic_is_fnv1a(self):
        for key in ["", "a", "user-42", "x" * 100, "ünïcødé", "9" * 7]:
            with self.subTest(key=key):
                self.assertEqual(_lua_bucket_emulated(key), _fnv1a32(key.encode()) % 10000)

    def test_rollouts_table_follows_the_policy(self):
        table = fs.lua_rollouts_table(fs.sluice_policy())
        self.assertIn('["demo.example"]', table)
        self.assertIn('stable = "aaaa1111"', table)
        self.assertIn('canary = "bbbb2222"', table)
        self.assertIn("weight = 5000", table)
        self.assertIn('sticky_header = "x-user-id"', table)
        self.assertIn('{target = "bbbb2222", matches = {{name = "x-canary", kind = "exact", value = "always"}}}', table)

    def test_header_route_to_a_named_hash(self):
        policy = fs.sluice_policy()
        policy["rollouts"][0]["headerRoutes"] = [
            {
                "name": "pin",
                "matches": [{"name": "X-Pin", "prefix": "v"}, {"name": "x-on", "present": True}],
                "hash": "aaaa1111",
            }
        ]
        table = fs.lua_rollouts_table(policy)
        self.assertIn(
            '{target = "aaaa1111", matches = {{name = "x-pin", kind = "prefix", value = "v"}, '
            '{name = "x-on", kind = "present"}}}',
            table,
        )

    def test_regex_is_refused_rather_than_ignored(self):
        policy = fs.sluice_policy()
        policy["rollouts"][0]["headerRoutes"][0]["matches"] = [{"name": "x", "regex": "a.*"}]
        with self.assertRaises(fs.BenchError):
            fs.lua_rollouts_table(policy)

    def test_source_has_no_placeholders_left(self):
        source = fs.lua_filter_source(fs.sluice_policy())
        self.assertNotIn("@", source)
        self.assertIn('local ROUTING_HEADER = "x-sluice-hash"', source)
        self.assertIn("handle:clearRouteCache()", source)


class EnvoyConfigTest(unittest.TestCase):
    def test_version_routes_come_before_the_fallback(self):
        for variant in ("sluice", "lua"):
            routes = fs.routes_for(variant)
            self.assertEqual([r["name"] for r in routes], ["stable", "canary", "fallback"])
            self.assertEqual(routes[0]["match"]["headers"][0]["string_match"]["exact"], fs.STABLE_HASH)
            self.assertEqual(routes[1]["route"]["cluster"], fs.CANARY_CLUSTER)
            self.assertNotIn("headers", routes[2]["match"])

    def test_filters_per_variant(self):
        names = {v: [f["name"] for f in fs.filters_for(v)] for v in fs.VARIANTS}
        self.assertEqual(names["plain"], [])
        self.assertEqual(names["weighted"], [])
        self.assertEqual(names["noop-wasm"], ["envoy.filters.http.wasm"])
        self.assertEqual(names["sluice"], ["envoy.filters.http.wasm"])
        self.assertEqual(names["lua"], ["envoy.filters.http.lua"])
        self.assertEqual(names["noop-native"], ["envoy.filters.http.dynamic_modules"])
        self.assertEqual(names["sluice-native"], ["envoy.filters.http.dynamic_modules"])
        # The native build runs the same policy on the same routes as the Wasm build.
        native = fs.filters_for("sluice-native")[0]["typed_config"]["filter_config"]
        self.assertEqual(json.loads(native["value"]), fs.sluice_policy())
        self.assertEqual(fs.routes_for("sluice-native"), fs.routes_for("sluice"))
        self.assertEqual(fs.routes_for("noop-native"), fs.routes_for("plain"))

    def test_another_build_runs_like_sluice_with_its_own_module(self):
        builds = {"old": Path("/tmp/old.wasm")}
        other = fs.filters_for("sluice@old", builds)[0]["typed_config"]["config"]
        this = fs.filters_for("sluice")[0]["typed_config"]["config"]
        self.assertEqual(other["vm_config"]["code"]["local"]["filename"], "/tmp/old.wasm")
        self.assertEqual(other["configuration"], this["configuration"])
        self.assertEqual(fs.routes_for("sluice@old"), fs.routes_for("sluice"))
        self.assertEqual(fs.expected_routes("sluice@old"), fs.expected_routes("sluice"))
        with self.assertRaises(fs.BenchError):
            fs.filters_for("sluice@new", builds)
        medians = {v: {"rps": 100.0, "cpu_us_per_req": 10.0} for v in ("noop-wasm", "lua", "sluice")}
        medians["sluice@old"] = {"rps": 50.0, "cpu_us_per_req": 20.0}
        rat = fb.ratios(medians)
        for base in ("noop-wasm", "lua", "sluice"):
            self.assertEqual(rat[f"sluice@old/{base}"], {"rps": 0.5, "cpu_us_per_req": 2.0})

    def test_sluice_gets_the_policy_as_a_string_value(self):
        config = fs.filters_for("sluice")[0]["typed_config"]["config"]["configuration"]
        self.assertEqual(config["@type"], "type.googleapis.com/google.protobuf.StringValue")
        self.assertEqual(json.loads(config["value"]), fs.sluice_policy())

    def test_envoy_accepts_the_configs(self):
        try:
            binary = fb.envoy_binary()
        except fs.BenchError:
            self.skipTest("no Envoy installed")
        modules = fs.MODULES
        for variant in fs.VARIANTS:
            with self.subTest(variant=variant), tempfile.TemporaryDirectory() as tmp:
                # Validate mode checks that a Wasm module's file exists.
                if variant in modules and not modules[variant].is_file():
                    self.skipTest(f"{modules[variant]} is not built")
                path = Path(tmp) / "envoy.json"
                path.write_text(json.dumps(fs.envoy_config(variant, 8080)))
                done = subprocess.run(
                    [binary, "--mode", "validate", "--config-path", str(path), "--disable-hot-restart", "-l", "error"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


class SummaryTest(unittest.TestCase):
    def test_parse_wrk_output(self):
        out = 'Running 5s test\nBENCH_JSON {"requests":1000,"duration_us":2000000,"p50_us":10,"p99_us":99}\n'
        summary = fs.parse_wrk_output(out)
        self.assertEqual(summary["rps"], 500.0)
        self.assertEqual(summary["p99_us"], 99)
        with self.assertRaises(fs.BenchError):
            fs.parse_wrk_output("Running 5s test\n")

    def test_medians_ratios_and_goals(self):
        def run(rps, cpu):
            return {"rps": rps, "p50_us": rps / 10, "p99_us": rps / 5, "cpu_us_per_req": cpu}

        runs = {
            "noop-wasm": [run(100, 10), run(300, 30), run(200, 20)],
            "lua": [run(150, 40), run(170, 40)],
            "sluice": [run(196, 21), run(50, 90), run(999, 1)],
            "plain": [],
        }
        medians = fb.summarize(runs)
        self.assertNotIn("plain", medians)
        self.assertEqual(medians["noop-wasm"]["rps"], 200)
        self.assertEqual(medians["lua"]["rps"], 160)
        self.assertEqual(medians["sluice"]["cpu_us_per_req"], 21)
        rat = fb.ratios(medians)
        self.assertAlmostEqual(rat["sluice/noop-wasm"]["rps"], 0.98)
        self.assertAlmostEqual(rat["sluice/lua"]["cpu_us_per_req"], 21 / 40)
        goal = fb.goals(rat)
        self.assertTrue(goal["sluice/noop-wasm"]["met"])
        self.assertTrue(goal["sluice/lua"]["met"])
        # CPU: sluice 21 vs noop 20 µs/req -> capacity 20/21 = 0.952; vs lua 40 -> 1.9.
        self.assertAlmostEqual(goal["sluice/noop-wasm"]["capacity_ratio"], 20 / 21)
        self.assertTrue(goal["sluice/noop-wasm"]["met_by_capacity"])
        medians["sluice"]["cpu_us_per_req"] = 22
        self.assertFalse(fb.goals(fb.ratios(medians))["sluice/noop-wasm"]["met_by_capacity"])
        medians["sluice"]["rps"] = 180
        self.assertFalse(fb.goals(fb.ratios(medians))["sluice/noop-wasm"]["met"])
        self.assertIn("NOT met", fb.format_table(medians, fb.ratios(medians), fb.goals(fb.ratios(medians))))
        # The native goal is judged against plain Envoy, on CPU per request too.
        medians["plain"] = fb.summarize({"plain": [run(1000, 10.0)]})["plain"]
        medians["sluice-native"] = fb.summarize({"sluice-native": [run(990, 10.4), run(900, 10.6)]})["sluice-native"]
        self.assertEqual(medians["sluice-native"]["cpu_us_per_req_min"], 10.4)
        self.assertEqual(medians["sluice-native"]["cpu_us_per_req_max"], 10.6)
        native = fb.goals(fb.ratios(medians))["sluice-native/plain"]
        self.assertAlmostEqual(native["capacity_ratio"], 10 / 10.5)
        self.assertTrue(native["met_by_capacity"])
        medians["sluice-native"]["cpu_us_per_req"] = 11
        self.assertFalse(fb.goals(fb.ratios(medians))["sluice-native/plain"]["met_by_capacity"])

    def test_nginx_config_keeps_everything_in_its_prefix(self):
        conf = fs.nginx_config(Path("/tmp/x"), 1234)
        self.assertIn("listen 127.0.0.1:1234;", conf)
        self.assertIn('return 200 "ok";', conf)
        self.assertIn("worker_processes 1;", conf)
        self.assertIn("access_log off;", conf)
        self.assertIn("client_body_temp_path /tmp/x/client_body;", conf)


if __name__ == "__main__":
    unittest.main()
