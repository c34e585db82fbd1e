"""Markdown tables from result rows (one row per bundle x threads x device)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def latency_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of latency rows, labelled with the device each was measured on."""
    header = ("| model | target | precision | backend | threads | device | p50 ms | p90 ms | p99 ms | FPS | CV | "
              "cold start ms | peak RSS MB | size MB | GFLOP/s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['model']} | {r['target']} | {r['precision']} | {r['backend']} | {r['threads']} | "
            f"{r['device']['label']} | {_fmt(lat['p50'])} | {_fmt(lat['p90'])} | {_fmt(lat['p99'])} | "
            f"{_fmt(r['fps'], 1)} | {_fmt(r['cv'] * 100, 1)}% | {_fmt(r.get('cold_start_ms'), 0)} | "
            f"{_fmt(r.get('peak_rss_mb'), 0)} | {_fmt(r.get('file_size_mb'), 1)} | {_fmt(r.get('gflops_per_s'), 1)} |")
    return "\n".join(lines) + "\n"
