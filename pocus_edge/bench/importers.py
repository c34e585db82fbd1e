"""`pocus bench import`: results measured elsewhere -> the same JSON rows as host runs.

- android_demo's benchmark JSON (already in the row schema; validated and labelled with the phone).
- TFLite's `benchmark_model` text output: its "Inference timings in us" line (init, first inference,
  warm-up average, inference average) and, when present, the "count=… avg=… std=…" statistics line.
  benchmark_model reports no percentiles: p50/p90/p99 stay null rather than being made up.
- Core ML reports written on a Mac by `pocus bench coreml-report` (format pocus-coreml-report/1, see
  coreml_report.py): every prediction time is kept, so percentiles are real.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from ..errors import PocusError
from .rows import BenchRowError, LatencyMs, LatencyRow

_TIMINGS = re.compile(r"Inference timings in us: Init: ([\d.]+), First inference: ([\d.]+), "
                      r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)")
_STATS = re.compile(r"count=(\d+) first=(\d+) curr=(\d+) min=(\d+) max=(\d+) avg=([\d.e+]+) std=(\d+)")
_KV = re.compile(r"^(?:INFO: )?(Graph|Num threads|Use gpu|Use xnnpack|Use nnapi): \[(.*)\]", re.M)
_MEMORY = re.compile(r"overall=([\d.]+)")


def parse_tflite_benchmark(text: str, device_label: str, model: str) -> LatencyRow:
    """One row from benchmark_model's stdout; raises PocusError when the timings line is absent."""
    match = _TIMINGS.search(text)
    if not match:
        raise PocusError("not TFLite benchmark_model output: no 'Inference timings in us' line found")
    init_us, first_us, _, avg_us = (float(g) for g in match.groups())
    settings = dict(_KV.findall(text))
    stats = _STATS.findall(text)
    std_ms = float(stats[-1][6]) / 1000 if stats else None
    runs = int(stats[-1][0]) if stats else None
    minimum = float(stats[-1][3]) / 1000 if stats else None
    maximum = float(stats[-1][4]) / 1000 if stats else None
    delegate = "gpu" if settings.get("Use gpu") == "1" else "nnapi" if settings.get("Use nnapi") == "1" else "cpu"
    memory = _MEMORY.search(text)
    mean_ms = avg_us / 1000
    if mean_ms <= 0:
        raise PocusError(f"benchmark_model output reports an average inference time of {avg_us} us; nothing to import")
    return LatencyRow(
        bundle=settings.get("Graph", ""), model=model, task="unknown", target="tflite", precision="unknown",
        backend=f"tflite benchmark_model ({delegate})",
        threads=int(settings["Num threads"]) if settings.get("Num threads", "").isdigit() else None,
        batch=1, device={"kind": "device", "label": device_label, "name": device_label}, profile=None, warmup=None,
        runs=runs, latency_ms=LatencyMs(p50=None, p90=None, p99=None, mean=mean_ms, std=std_ms, min=minimum,
                                        max=maximum),
        cv=(std_ms / mean_ms) if std_ms is not None else None, fps=1000 / mean_ms,
        cold_start_ms=(init_us + first_us) / 1000, peak_rss_mb=float(memory.group(1)) if memory else None,
        file_size_mb=None, flops=None, gflops_per_s=None, source="imported: tflite benchmark_model",
        date=dt.date.today().isoformat(), command="benchmark_model (see the imported file)")


def import_file(path: Path, device_label: str | None = None, model: str | None = None) -> list[LatencyRow]:
    """Rows from a file: android_demo JSON (row schema, validated field by field), a Core ML report, or
    benchmark_model text."""
    from .coreml_report import REPORT_FORMAT, report_to_row

    path = Path(path)
    if not path.is_file():
        raise PocusError(f"{path}: no such file")
    text = path.read_text(errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        if not device_label:
            raise PocusError("benchmark_model text does not name the device: pass --device 'Pixel 8 (Tensor G3)'")
        return [parse_tflite_benchmark(text, device_label, model or path.stem)]
    if isinstance(data, dict) and data.get("format") == REPORT_FORMAT:
        return [report_to_row(data, path.name)]
    rows = data["rows"] if isinstance(data, dict) and "rows" in data else data if isinstance(data, list) else [data]
    if not isinstance(rows, list):
        raise BenchRowError(f"{path}: 'rows' is not a list; rows follow pocus_edge/bench/row.schema.json")
    return [LatencyRow.from_json(_imported(row, path.name), f"{path} row {k}") for k, row in enumerate(rows, 1)]


def _imported(row: Any, name: str) -> Any:
    """The row with its source saying it was imported from `name` (android_demo writes source "android_demo")."""
    if not isinstance(row, dict):
        return row  # from_json names what it is
    source = row.get("source", f"imported: {name}")
    return {**row, "source": source if str(source).startswith("imported") else f"imported ({source}): {name}"}
