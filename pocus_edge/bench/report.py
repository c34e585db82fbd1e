"""Markdown tables from result rows (one row per bundle x threads x device)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .rows import LatencyRow, ParityRow


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{_fmt(fraction * 100, 1)}%"


def latency_table(rows: Sequence[LatencyRow]) -> str:
    """Markdown table of latency rows, labelled with the device each was measured on ("-": not measured)."""
    header = ("| model | target | precision | backend | threads | device | p50 ms | p90 ms | p99 ms | FPS | CV | "
              "cold start ms | peak RSS MB | size MB | GFLOP/s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lat = r.latency_ms
        lines.append(
            f"| {r.model} | {r.target} | {r.precision} | {r.backend} | {_fmt(r.threads)} | {r.device['label']} | "
            f"{_fmt(lat.p50)} | {_fmt(lat.p90)} | {_fmt(lat.p99)} | {_fmt(r.fps, 1)} | {_percent(r.cv)} | "
            f"{_fmt(r.cold_start_ms, 0)} | {_fmt(r.peak_rss_mb, 0)} | {_fmt(r.file_size_mb, 1)} | "
            f"{_fmt(r.gflops_per_s, 1)} |")
    return "\n".join(lines) + "\n"


def parity_table(rows: Sequence[ParityRow]) -> str:
    """Markdown table of `bench parity` rows: agreement with PyTorch fp32, ground truth, and the change."""
    header = ("| bundle | target | precision | backend | images | agreement with fp32 | ground truth | "
              "PyTorch fp32 ground truth | change |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        a, gt, ref = r.agreement, r.ground_truth, r.reference_ground_truth
        if "dice" in gt:
            agree = f"Dice {_fmt(a['dice_mean'], 4)} (min {_fmt(a['dice_min'], 3)})"
            truth = f"Dice {_fmt(gt['dice'], 4)}, IoU {_fmt(gt['iou'], 4)}"
            ref_truth, change = f"Dice {_fmt(ref['dice'], 4)}", _signed(r.dice_change)
        else:
            agree = f"top-1 {_fmt(a['top1_agreement'], 4)}"
            truth = f"accuracy {_fmt(gt['accuracy'], 4)}, macro-F1 {_fmt(gt['macro_f1'], 4)}"
            ref_truth, change = f"accuracy {_fmt(ref['accuracy'], 4)}", _signed(r.accuracy_change)
        name = str(r.bundle).rstrip("/").split("/")[-1]
        lines.append(f"| {name} | {r.target} | {r.precision} | {r.backend} | {r.images} ({r.split}) | "
                     f"{agree} | {truth} | {ref_truth} | {change} |")
    return "\n".join(lines) + "\n"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"
