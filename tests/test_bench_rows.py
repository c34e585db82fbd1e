"""The typed bench rows (pocus_edge/bench/rows.py): the committed JSON Schema is the generated one, every producer
writes rows that validate against it, rows keep the field names files and docs rely on, and readers refuse rows
that do not fit with one line naming the file and the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest

from pocus_edge.bench.rows import (
    ROW_SCHEMA,
    SCHEMA_PATH,
    BenchRowError,
    LatencyMs,
    LatencyRow,
    ParityRow,
    json_schema,
    read_rows,
    rows_document,
    schema_text,
    write_rows,
)
from pocus_edge.errors import PocusError

SAMPLES = Path(__file__).parent / "samples"
# The keys (and their order) of a `bench latency` row before the typed rows; files and README name them.
OLD_LATENCY_KEYS = ["schema", "bundle", "model", "task", "target", "precision", "backend", "threads", "batch",
                    "device", "profile", "warmup", "runs", "latency_ms", "cv", "fps", "file_size_mb", "flops",
                    "gflops_per_s", "model_sha256", "source", "date", "command", "cold_start_ms", "peak_rss_mb"]


def android_row(**changes) -> dict:
    """A row as android_demo's LatencyStats.benchRow writes it (no p10, bundle = the manifest's name)."""
    row = {"schema": ROW_SCHEMA, "bundle": "unet-resnet50", "model": "unet-resnet50", "task": "segmentation",
           "target": "tflite", "precision": "int8", "backend": "litert xnnpack", "threads": 4, "batch": 1,
           "device": {"kind": "android", "label": "samsung SM-S921B (s5e9945), Android 14", "model": "SM-S921B",
                      "soc": "s5e9945", "android": "14"},
           "warmup": 10, "runs": 100,
           "latency_ms": {"p50": 40.1, "p90": 42.0, "p99": 45.3, "mean": 40.6, "std": 1.2, "min": 38.0,
                          "max": 47.5},
           "cv": 0.03, "fps": 24.9, "cold_start_ms": 310.0, "source": "android_demo",
           "date": "2026-11-20T10:11:12.123Z"}
    row.update(changes)
    return row


def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def test_committed_schema_is_the_generated_one():
    assert SCHEMA_PATH.read_text() == schema_text(), "run: python -m pocus_edge.bench.rows"
    jsonschema.Draft202012Validator.check_schema(json_schema())
    defs = json_schema()["$defs"]
    assert set(defs) == {"LatencyRow", "LatencyMs", "ParityRow"}
    assert defs["LatencyRow"]["required"] == ["schema", "model", "task", "target", "precision", "backend", "threads",
                                              "batch", "device", "runs", "latency_ms", "cv", "fps", "source", "date"]


def test_every_producer_writes_rows_the_schema_accepts(monkeypatch, tmp_path):
    from pocus_edge.bench import baselines, latency
    from pocus_edge.bench.coreml_report import report_to_row
    from pocus_edge.bench.importers import import_file, parse_tflite_benchmark

    monkeypatch.setattr(latency, "cold_start", lambda bundle, threads: {"cold_start_ms": None, "peak_rss_mb": None})
    (tmp_path / "model.onnx").write_bytes(b"x" * 1000)
    manifest = {"name": "unet", "task": "segmentation", "target": "onnx", "precision": "int8", "flops": 2_000_000,
                "model_file": "model.onnx", "files": {"model.onnx": "ab" * 32}}
    predictor = type("P", (), {"manifest": manifest, "backend": type("B", (), {"name": "onnxruntime"})})()
    rows = [latency._row(tmp_path, predictor, 2, 1, [4.0, 5.0, 6.0], 1, 3, {"kind": "host", "label": "host"},
                         "pocus bench latency", True),
            baselines._row("unet", "segmentation", "pytorch eager", 1, [9.0, 10.0], 2, 1, None, None),
            report_to_row(json.loads((SAMPLES / "coreml_report.json").read_text()), "coreml_report.json"),
            parse_tflite_benchmark((SAMPLES / "tflite_benchmark_model.txt").read_text(), "Pixel 8", "unet")]
    (tmp_path / "phone.json").write_text(json.dumps({"schema": ROW_SCHEMA, "rows": [android_row()]}))
    rows += import_file(tmp_path / "phone.json")
    _validator().validate(rows_document(rows))
    measured = rows[0].to_json()
    assert list(measured)[:len(OLD_LATENCY_KEYS)] == OLD_LATENCY_KEYS
    assert measured["cold_start_ms"] is None and measured["file_size_mb"] == pytest.approx(0.001)
    assert measured["gflops_per_s"] == pytest.approx(2e6 / 0.005 / 1e9) and measured["model_sha256"] == "ab" * 8
    assert rows[-1].source == "imported (android_demo): phone.json" and rows[-1].latency_ms.p10 is None


def test_rows_file_round_trip_keeps_every_value(tmp_path):
    row = LatencyRow.from_json(android_row(), "phone.json row 1")
    write_rows(tmp_path / "rows.json", [row, android_row(threads=2)])
    back = read_rows(tmp_path / "rows.json")
    assert back[0] == row and back[1].threads == 2
    assert json.loads((tmp_path / "rows.json").read_text())["rows"][0]["latency_ms"] == {
        "p10": None, "p50": 40.1, "p90": 42.0, "p99": 45.3, "mean": 40.6, "std": 1.2, "min": 38.0, "max": 47.5}


def test_a_row_reads_as_its_json_and_cannot_be_changed_through_it():
    row = LatencyRow.from_json(android_row())
    assert row["latency_ms"]["p50"] == row.latency_ms.p50 == 40.1 and row.get("flops") is None
    row["device"]["label"] = "changed"
    assert row.device["label"].startswith("samsung")
    with pytest.raises(AttributeError):
        row.threads = 8  # type: ignore[misc]


def test_undefined_statistics_are_null_never_nan(tmp_path):
    """Before: a failed cold-start run put NaN in the row (written as null only by write_rows)."""
    from pocus_edge.bench.latency import cold_start

    assert cold_start(tmp_path / "no-bundle", 1) == {"cold_start_ms": None, "peak_rss_mb": None}
    with pytest.raises(BenchRowError, match="field 'cv' is nan; write null"):
        dataclasses.replace(LatencyRow.from_json(android_row()), cv=float("nan"))


def test_latency_table_shows_a_dash_for_an_unknown_cv():
    """A benchmark_model run without its statistics line has no std, so no CV: the table crashed on None * 100."""
    from pocus_edge.bench.importers import parse_tflite_benchmark
    from pocus_edge.bench.report import latency_table

    text = ("INFO: Num threads: [2]\nINFO: Inference timings in us: Init: 1000, First inference: 20000, "
            "Warmup (avg): 15000, Inference (avg): 12500\n")
    row = parse_tflite_benchmark(text, "Pixel 8", "unet")
    assert row.cv is None and row.runs is None
    line = latency_table([row]).splitlines()[2]
    assert line.startswith("| unet | tflite | unknown | tflite benchmark_model (cpu) | 2 | Pixel 8 | - | - | - | "
                           "80.0 | - |"), line


def test_parity_rows_keep_their_change_key_and_refuse_nan(tmp_path):
    row = ParityRow(bundle="b", target="onnx", precision="int8", backend="onnxruntime", images=4, split="test",
                    agreement={"dice_mean": 0.99, "dice_min": 0.95}, ground_truth={"dice": 0.8, "iou": 0.7,
                                                                                   "hd95_mm": None},
                    reference_ground_truth={"dice": 0.81, "iou": 0.71}, dice_change=-0.01)
    data = row.to_json()
    assert "accuracy_change" not in data and data["dice_change"] == -0.01 and row["dice_change"] == -0.01
    assert ParityRow.from_json(data) == row
    defs = json_schema()["$defs"]
    jsonschema.Draft202012Validator({**defs["ParityRow"], "$defs": defs}).validate(data)
    with pytest.raises(BenchRowError, match=r"parity.json row 1: field 'ground_truth.hd95_mm' is nan"):
        ParityRow.from_json({**data, "ground_truth": {"dice": 0.8, "hd95_mm": float("nan")}}, "parity.json row 1")
    with pytest.raises(BenchRowError, match="dice_change or accuracy_change, not both"):
        ParityRow.from_json({**data, "accuracy_change": 0.0})


def test_bench_row_errors_are_pocus_errors_and_value_errors():
    assert issubclass(BenchRowError, PocusError) and issubclass(BenchRowError, ValueError)
    assert LatencyMs(p50=1.0, p90=2.0, p99=3.0, mean=1.5).to_json()["p10"] is None
