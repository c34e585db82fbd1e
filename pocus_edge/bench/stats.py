"""Latency statistics and the result-row schema shared by host runs, imports and the Android app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ROW_SCHEMA = "pocus-bench-row/1"
NOISY_CV = 0.10
REQUIRED_FIELDS = ("schema", "model", "task", "target", "precision", "backend", "threads", "batch", "device",
                   "latency_ms", "cv", "fps", "runs", "source", "date")


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    """p10/p50/p90/p99 (linear interpolation), mean, std (population), min and max of timings in ms (p10: the
    lower end of the plots' error bars)."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        raise ValueError("no timing samples")
    return {"p10": float(np.percentile(a, 10)), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max())}


def coefficient_of_variation(samples_ms) -> float:
    a = np.asarray(samples_ms, dtype=float)
    return float(a.std() / a.mean()) if a.size and a.mean() > 0 else float("nan")


def fps(p50_ms: float, batch: int = 1) -> float:
    return 1000.0 * batch / p50_ms if p50_ms > 0 else float("nan")


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing or malformed field of a result row."""
    for key in REQUIRED_FIELDS:
        if key not in row:
            raise ValueError(f"result row lacks field {key!r}")
    if row["schema"] != ROW_SCHEMA:
        raise ValueError(f"result row schema {row['schema']!r} is not {ROW_SCHEMA}")
    if not isinstance(row["latency_ms"].get("mean"), (int, float)):
        raise ValueError("latency_ms.mean missing or not a number")
    for key in ("p50", "p90", "p99"):  # null only when the measuring tool does not report it (imports)
        if key not in row["latency_ms"] or not isinstance(row["latency_ms"][key], (int, float, type(None))):
            raise ValueError(f"latency_ms.{key} missing or not a number/null")
    if not isinstance(row["device"], dict) or "label" not in row["device"]:
        raise ValueError("device must be an object with a label (host, host emulation: NAME, or the device's name)")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    from ..io import atomic_write_json, nan_to_null

    for row in rows:
        validate_row(row)
    atomic_write_json(Path(path), {"schema": ROW_SCHEMA, "rows": nan_to_null(rows)})


def read_rows(path: Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    for row in rows:
        validate_row(row)
    return rows
