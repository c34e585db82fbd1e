"""Benchmark harness: statistics on known samples, the row schema, and a latency run on a small bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from pocus_edge.bench.stats import coefficient_of_variation, fps, latency_stats, read_rows, validate_row


def test_latency_stats_on_known_samples():
    samples = list(range(1, 101))  # 1..100 ms
    s = latency_stats(samples)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["std"] == pytest.approx(np.std(samples))
    assert s["min"] == 1 and s["max"] == 100
    assert coefficient_of_variation([10, 10, 10]) == 0.0
    assert coefficient_of_variation([9, 11]) == pytest.approx(0.1)
    assert fps(20.0) == pytest.approx(50.0) and fps(20.0, batch=4) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        latency_stats([])


def test_row_schema_is_enforced():
    with pytest.raises(ValueError, match="lacks field 'task'"):
        validate_row({"schema": "pocus-bench-row/1", "model": "m"})  # task, target, ... missing


def test_latency_cli_on_a_bundle(bundle_factory, tmp_path):
    bundle = bundle_factory("onnx", "fp32", model="encoder-resnet50")
    out_json, out_md = tmp_path / "lat.json", tmp_path / "lat.md"
    proc = run_cli("bench", "latency", str(bundle), str(bundle_factory("tflite", "fp32", model="encoder-resnet50")),
                   "--threads", "1,2", "--warmup", "1", "--runs", "5", "--json", str(out_json), "--md", str(out_md))
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out_json)
    assert len(rows) == 4 and {r["threads"] for r in rows} == {1, 2}
    for r in rows:
        assert r["latency_ms"]["p50"] > 0 and r["runs"] == 5 and r["device"]["label"] == "host"
        assert r["cold_start_ms"] > 0 and r["peak_rss_mb"] > 0 and r["gflops_per_s"] > 0
    assert "| encoder-resnet50-embedding |" in out_md.read_text() or "encoder-resnet50" in out_md.read_text()
    profiled = run_cli("bench", "latency", str(bundle), "--profile", "phone", "--runs", "3", "--warmup", "1",
                       "--no-cold-start", "--json", str(out_json))
    assert profiled.returncode == 0, profiled.stderr
    assert all(r["device"]["label"] == "host emulation: phone" for r in json.loads(out_json.read_text())["rows"])
    bad = run_cli("bench", "latency", str(bundle), "--threads", "0")
    assert bad.returncode == 2 and ">= 1" in bad.stderr
