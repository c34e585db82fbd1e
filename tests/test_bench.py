"""Benchmark harness: statistics on known samples, the row schema, and a latency run on a small bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import pocus_here, run_cli

from pocus_edge.bench.rows import read_rows, validate_row
from pocus_edge.bench.stats import coefficient_of_variation, fps, latency_stats


def test_latency_stats_on_known_samples():
    samples = list(range(1, 101))  # 1..100 ms
    s = latency_stats(samples)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["std"] == pytest.approx(np.std(samples))
    assert s["min"] == 1 and s["max"] == 100
    assert coefficient_of_variation([10, 10, 10]) == 0.0
    assert coefficient_of_variation([9, 11]) == pytest.approx(0.1)
    assert fps(20.0) == pytest.approx(50.0) and fps(20.0, batch=4) == pytest.approx(200.0)
    with pytest.raises(ValueError, match="no timing samples"):
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
    table = out_md.read_text()
    assert "| encoder-resnet50 | onnx | fp32 | onnxruntime | 1 |" in table, table
    assert "| encoder-resnet50 | tflite | fp32 |" in table, table
    profiled = run_cli("bench", "latency", str(bundle), "--profile", "phone", "--runs", "3", "--warmup", "1",
                       "--no-cold-start", "--json", str(out_json))
    assert profiled.returncode == 0, profiled.stderr
    assert all(r["device"]["label"] == "host emulation: phone" for r in json.loads(out_json.read_text())["rows"])
    bad = run_cli("bench", "latency", str(bundle), "--threads", "0")
    assert bad.returncode == 2 and ">= 1" in bad.stderr


SAMPLES = __import__("pathlib").Path(__file__).parent / "samples"


def test_import_tflite_benchmark_model_text(tmp_path):
    from pocus_edge.bench.importers import import_file

    rows = import_file(SAMPLES / "tflite_benchmark_model.txt", device_label="Pixel 8 (Tensor G3)", model="unet")
    row = rows[0]
    assert row["latency_ms"]["mean"] == pytest.approx(83.5986) and row["latency_ms"]["p50"] is None
    assert row["threads"] == 4 and row["runs"] == 50 and row["latency_ms"]["std"] == pytest.approx(1.544)
    assert row["cold_start_ms"] == pytest.approx(41.118 + 96.512) and row["peak_rss_mb"] == pytest.approx(61.6523)
    assert row["device"]["label"] == "Pixel 8 (Tensor G3)" and row["source"].startswith("imported")


def test_import_cli_merges_android_rows(tmp_path):
    android = {"schema": "pocus-bench-row/1", "rows": [{
        "schema": "pocus-bench-row/1", "model": "unet-resnet50", "task": "segmentation", "target": "tflite",
        "precision": "int8", "backend": "litert xnnpack", "threads": 4, "batch": 1, "runs": 50,
        "device": {"kind": "android", "label": "Galaxy S24 (Exynos 2400), Android 14", "model": "SM-S921B"},
        "latency_ms": {"p50": 40.1, "p90": 42.0, "p99": 45.3, "mean": 40.6, "std": 1.2}, "cv": 0.03, "fps": 24.9,
        "cold_start_ms": 310.0, "source": "android_demo", "date": "2026-11-20"}]}
    (tmp_path / "phone.json").write_text(json.dumps(android))
    into = tmp_path / "rows.json"
    proc = run_cli("bench", "import", str(tmp_path / "phone.json"), str(SAMPLES / "tflite_benchmark_model.txt"),
                   "--device", "Pixel 8", "--into", str(into))
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(into)
    assert [r["device"]["label"] for r in rows] == ["Galaxy S24 (Exynos 2400), Android 14", "Pixel 8"]
    (tmp_path / "bad.txt").write_text("hello")
    bad = run_cli("bench", "import", str(tmp_path / "bad.txt"), "--device", "x", "--into", str(into))
    assert bad.returncode == 2 and "not TFLite benchmark_model output" in bad.stderr


def test_peak_reports_positive_throughput():
    from pocus_edge.bench.peak import fp32_gemm, int8_gemm

    assert fp32_gemm(1, size=256, repeats=2) > 0.1
    assert int8_gemm(1, size=256, repeats=2) > 0.1


def test_tiny_suite_end_to_end(bundle_factory, tmp_path, capsys):
    """A one-model suite: bundles reused on both runs, latency + baselines, report and non-empty plots."""
    import shutil

    import yaml

    suite = {"out": str(tmp_path / "suite"), "image_size": 64, "models": {"enc": "encoder-resnet50"},
             "targets": {"onnx": ["fp32"], "tflite": ["fp32"]}, "threads": [1], "warmup": 1, "runs": 3}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    # both bundles are the session's, copied in: every run reuses them (the suite's own export of a model that has
    # no bundle yet runs in test_finetune's test_eval_sweep_and_embed_plot); the CLI runs in this process
    bundles = tmp_path / "suite" / "bundles"
    for target in ("onnx", "tflite"):
        shutil.copytree(bundle_factory(target, "fp32", model="encoder-resnet50"), bundles / f"enc-{target}-fp32")
    stamps = {b.name: (b / "manifest.json").stat().st_mtime_ns for b in bundles.iterdir()}
    code, _, err = pocus_here(["bench", "suite", path], capsys)
    assert code == 0, err[-2000:]
    assert {b.name: (b / "manifest.json").stat().st_mtime_ns for b in bundles.iterdir()} == stamps  # reused
    rows = read_rows(tmp_path / "suite" / "latency.json")
    backends = {r["backend"] for r in rows}
    assert {"onnxruntime", "tflite", "pytorch eager"} <= backends
    assert any(b.startswith("onnxruntime (plain") for b in backends)
    for png in ("latency_by_precision.png", "size_vs_quality.png"):
        assert (tmp_path / "suite" / png).stat().st_size > 5_000
    report = (tmp_path / "suite" / "report.md").read_text()
    assert "| encoder-resnet50 | onnx | fp32 | onnxruntime | 1 |" in report, report
    assert "| encoder-resnet50 | tflite | fp32 |" in report, report
    parity_stamp = (tmp_path / "suite" / "parity.json").stat().st_mtime_ns
    code, _, err = pocus_here(["bench", "suite", path, "--only", "latency"], capsys)
    assert code == 0, err[-2000:]
    assert (tmp_path / "suite" / "parity.json").stat().st_mtime_ns == parity_stamp  # the other stage's file kept
    code, _, err = pocus_here(["bench", "suite", path, "--only", "speed"], capsys)
    assert code == 2 and "--only 'speed': choose one of latency, parity" in err
    assert {b.name: (b / "manifest.json").stat().st_mtime_ns for b in bundles.iterdir()} == stamps  # reused


def test_import_coreml_report_keeps_real_percentiles_and_placement(tmp_path):
    from pocus_edge.bench.importers import import_file

    report = json.loads((SAMPLES / "coreml_report.json").read_text())
    row = import_file(SAMPLES / "coreml_report.json")[0]
    assert row["latency_ms"]["p50"] == pytest.approx(np.percentile(report["prediction_ms"], 50))
    assert row["latency_ms"]["p99"] == pytest.approx(np.percentile(report["prediction_ms"], 99))
    assert row["runs"] == 20 and row["cold_start_ms"] == pytest.approx(812.5 + 30.7)
    assert row["device"] == {"kind": "device", "label": "Mac14,2 (Apple M2)", "name": "Mac14,2 (Apple M2)",
                             "os": "macOS 15.1"}
    assert row["backend"] == "coreml (ALL)" and row["target"] == "coreml" and row["precision"] == "fp16"
    devices = row["compute_placement"]["devices"]
    assert devices["neural_engine"]["ops"] == 22 and row["compute_placement"]["unplaced_ops"] == 3
    assert sum(d["cost_share"] for d in devices.values()) == pytest.approx(1.0)
    assert row["gflops_per_s"] == pytest.approx(42.0 / (row["latency_ms"]["p50"] / 1000))
    del report["prediction_ms"]
    (tmp_path / "broken.json").write_text(json.dumps(report))
    proc = run_cli("bench", "import", str(tmp_path / "broken.json"), "--into", str(tmp_path / "rows.json"))
    assert proc.returncode == 2 and "malformed Core ML report" in proc.stderr and "Traceback" not in proc.stderr


def test_placement_summary_counts_and_shares():
    from pocus_edge.bench.coreml_report import summarize_placement

    s = summarize_placement([("const", None, None), ("conv", "neural_engine", 0.3), ("conv", "neural_engine", 0.3),
                             ("softmax", "cpu", 0.2), ("resize", "gpu", None)])
    ne = s["devices"]["neural_engine"]
    assert s["unplaced_ops"] == 1 and ne["ops"] == 2 and ne["cost_share"] == pytest.approx(0.75)
    assert s["devices"]["gpu"]["cost_share"] == 0.0 and s["devices"]["cpu"]["cost_share"] == pytest.approx(0.25)


def test_coreml_report_refuses_clearly_off_a_mac(bundle_factory, tmp_path):
    import platform

    onnx_bundle = bundle_factory("onnx", "fp32")
    proc = run_cli("bench", "coreml-report", str(onnx_bundle), "--out", str(tmp_path / "r.json"))
    assert proc.returncode == 2 and "coreml-report times coreml bundles" in proc.stderr
    if platform.system() != "Darwin":
        proc = run_cli("bench", "coreml-report", str(bundle_factory("coreml", "fp16")), "--out",
                       str(tmp_path / "r.json"))
        assert proc.returncode == 2 and "Core ML predicts only on macOS" in proc.stderr
        assert not (tmp_path / "r.json").exists()


def test_suite_reuses_only_bundles_of_this_exporter_version(bundle_factory, tmp_path, monkeypatch):
    import shutil

    import pocus_edge.export as export_pkg
    from pocus_edge.bench.suite import _bundle

    out = tmp_path / "bundles" / "unet-onnx-fp32"
    shutil.copytree(bundle_factory("onnx", "fp32"), out)
    exported = []
    monkeypatch.setattr(export_pkg, "export", lambda *args, **kwargs: exported.append(args))
    suite = {"out": str(tmp_path), "image_size": 64}
    assert _bundle(suite, "unet", "unet-resnet50", "onnx", "fp32") == out and exported == []
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tool_versions"]["pocus-edge"] = "0.1.0"  # made before the decoder rewrite: graphs differ
    (out / "manifest.json").write_text(json.dumps(manifest))
    _bundle(suite, "unet", "unet-resnet50", "onnx", "fp32")
    assert len(exported) == 1


def test_suite_data_folders_per_model():
    from pocus_edge.bench.suite import per_model

    suite = {"calib_data": "busi", "parity_data": {"unet": "busi", "hc18-unet": "hc18"}}
    assert per_model(suite, "calib_data", "hc18-unet") == "busi"
    assert per_model(suite, "parity_data", "hc18-unet") == "hc18"
    assert per_model(suite, "parity_data", "classifier") is None  # no ground-truth stage for it
