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


def parity_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of `bench parity` rows: agreement with PyTorch fp32, ground truth, and the change."""
    header = ("| bundle | target | precision | backend | images | agreement with fp32 | ground truth | "
              "PyTorch fp32 ground truth | change |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        a, gt, ref = r["agreement"], r["ground_truth"], r["reference_ground_truth"]
        if "dice_change" in r:
            agree = f"Dice {_fmt(a['dice_mean'], 4)} (min {_fmt(a['dice_min'], 3)})"
            truth = f"Dice {_fmt(gt['dice'], 4)}, IoU {_fmt(gt['iou'], 4)}"
            ref_truth, change = f"Dice {_fmt(ref['dice'], 4)}", f"{r['dice_change']:+.4f}"
        else:
            agree = f"top-1 {_fmt(a['top1_agreement'], 4)}"
            truth = f"accuracy {_fmt(gt['accuracy'], 4)}, macro-F1 {_fmt(gt['macro_f1'], 4)}"
            ref_truth, change = f"accuracy {_fmt(ref['accuracy'], 4)}", f"{r['accuracy_change']:+.4f}"
        name = str(r["bundle"]).rstrip("/").split("/")[-1]
        lines.append(f"| {name} | {r['target']} | {r['precision']} | {r['backend']} | {r['images']} ({r['split']}) | "
                     f"{agree} | {truth} | {ref_truth} | {change} |")
    return "\n".join(lines) + "\n"
