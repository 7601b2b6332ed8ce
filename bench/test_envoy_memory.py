"""Tests of the Envoy memory benchmark (`bench/envoy_memory.py`): its pure parts, and a real run at
a tiny size (a real `sluice serve` and Envoy; skipped when either or the module is not built).

`python3 -m unittest discover -s bench` (part of `make test`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envoy_memory as em  # noqa: E402


class PureTest(unittest.TestCase):
    def test_every_change_moves_one_rollout_to_a_new_weight(self):
        weights = [10] * 5
        for n in range(1, 400):
            new = em.next_weights(weights, n)
            changed = [i for i in range(5) if new[i] != weights[i]]
            self.assertEqual(changed, [n % 5])
            self.assertTrue(all(1 <= w <= 99 for w in new), new)
            weights = new

    def test_rollouts_file_has_one_document_per_rollout(self):
        text = em.rollouts_file(3, [10, 20, 30], [1001, 1002, 1003, 1004, 1005, 1006])
        docs = text.split("---\n")
        self.assertEqual(len(docs), 3)
        self.assertIn("name: r001", docs[1])
        self.assertIn("hosts: [r001.bench.local]", docs[1])
        self.assertIn('bbbb2222: ["127.0.0.1:1004"]', docs[1])
        self.assertIn('canary: {podTemplateHash: "bbbb2222", weight: 20}', docs[1])
        self.assertIn('stable: {podTemplateHash: "aaaa1111", weight: 80}', docs[1])
        with self.assertRaises(em.BenchError):
            em.rollouts_file(2, [10], [1, 2, 3, 4])

    def test_parsers(self):
        prom = em.parse_prometheus(
            "# HELP x\nsluice_xds_nacks_total{type_url=\"a\"} 1\nsluice_xds_nacks_total{type_url=\"b\"} 2\n"
            "sluice_snapshots_published_total 7\n"
        )
        self.assertEqual(prom, {"sluice_xds_nacks_total": 3.0, "sluice_snapshots_published_total": 7.0})
        stats = em.parse_envoy_stats("server.memory_allocated: 19400000\nserver.memory_heap_size: 35\nx: text\n")
        self.assertEqual(stats, {"server.memory_allocated": 19400000, "server.memory_heap_size": 35})

    def test_growth_verdict(self):
        start = {"memory_allocated": 19_400_000, "idle_cpu": 0.004}
        # The report: 19.4 -> 76.6 MB, idle CPU about 10x.
        bad = em.growth_verdict(start, {"memory_allocated": 76_600_000, "idle_cpu": 0.04})
        self.assertFalse(bad["memory_met"])
        self.assertFalse(bad["idle_cpu_met"])
        good = em.growth_verdict(start, {"memory_allocated": 20_000_000, "idle_cpu": 0.006})
        self.assertTrue(good["memory_met"])
        self.assertTrue(good["idle_cpu_met"])


class TinyRunTest(unittest.TestCase):
    def test_a_tiny_run_reports_every_sample(self):
        for path in (em.SLUICE, em.WASM):
            if not path.is_file():
                self.skipTest(f"{path} is not built")
        try:
            em.envoy_binary()
        except em.BenchError:
            self.skipTest("no Envoy installed")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.json"
            code = em.main(["--changes", "6", "--rollouts", "3", "--idle", "1", "--cpu-window", "0.5",
                            "--settle", "0.5", "--request-every", "2", "--progress", "0", "--out", str(out)])
            self.assertEqual(code, 0)
            result = json.loads(out.read_text())
        self.assertEqual([s["label"] for s in result["samples"]], ["start", "after 6 changes", "after 1 s idle"])
        for sample in result["samples"]:
            self.assertGreater(sample["memory_allocated"], 0)
            self.assertGreater(sample["rss_mib"], 0)
        self.assertEqual(result["failed_requests"], [])
        self.assertEqual(result["nacks"], 0)
        self.assertEqual(result["requests"], 4)


if __name__ == "__main__":
    unittest.main()
