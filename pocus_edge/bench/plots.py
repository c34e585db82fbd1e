"""PNG plots for `pocus bench latency --plot` and the suite: latency per bundle (one panel per thread count) and
bundle size against agreement with fp32 (a Pareto view).

Every plot names its metric and unit on the axes, starts its value axes at 0 (bar lengths compare honestly), has a
legend for its colours, and is saved with a tight bounding box so rotated labels are never cut off. Latency bars
are the median (p50) with p10-p90 error bars; rows without p10 (imports from older tools) get an upper bar only.
Rows are read as their JSON (rows.LatencyRow and ParityRow are read-only Mappings), so rows from a file plot alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PRECISION_COLORS = {"fp32": "#1f77b4", "fp16": "#ff7f0e", "int8": "#2ca02c"}
BASELINE_COLOR = "#888888"
OTHER_COLOR = "#9467bd"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(row: Mapping[str, Any]) -> str:
    if row["target"] == "baseline":
        return BASELINE_COLOR
    return PRECISION_COLORS.get(row["precision"], OTHER_COLOR)


def _label(row: Mapping[str, Any]) -> str:
    if row["target"] == "baseline":
        return f"{row['model']}\n{row['backend'][:24]}"
    return f"{row['model']}\n{row['target']} {row['precision']}"


def latency_error_bars(rows: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """[[p50 - p10, ...], [p90 - p50, ...]]: matplotlib's yerr for p10-p90 around the median (0 where unknown)."""
    lower, upper = [], []
    for r in rows:
        lat = r["latency_ms"]
        p50 = lat["p50"]
        lower.append(max(p50 - lat["p10"], 0.0) if lat.get("p10") is not None else 0.0)
        upper.append(max(lat["p90"] - p50, 0.0) if lat.get("p90") is not None else 0.0)
    return [lower, upper]


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return out


def plot_latency(rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Bars: p50 latency (ms) with p10-p90 error bars per (model, target, precision), one panel per thread count."""
    from matplotlib.patches import Patch

    plt = _plt()
    rows = [r for r in rows if r["latency_ms"].get("p50") is not None]
    threads = sorted({r["threads"] for r in rows}) or [1]
    per_panel = max((sum(r["threads"] == t for r in rows) for t in threads), default=1)
    fig, axes = plt.subplots(1, len(threads), figsize=(max(5.0, 0.55 * per_panel + 2) * len(threads), 5.0),
                             squeeze=False)
    for ax, t in zip(axes[0], threads, strict=True):
        sel = [r for r in rows if r["threads"] == t]
        ax.bar(range(len(sel)), [r["latency_ms"]["p50"] for r in sel], color=[_color(r) for r in sel],
               yerr=latency_error_bars(sel), capsize=3, ecolor="#333333")
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([_label(r) for r in sel], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("latency per call, p50 (ms); bars p10-p90")
        ax.set_title(f"{t} thread(s) - {sel[0]['device']['label'] if sel else 'no rows'}", fontsize=9)
    shown = {_color(r): r for r in rows}
    handles = [Patch(color=color, label=name) for name, color in PRECISION_COLORS.items() if color in shown]
    handles += [Patch(color=BASELINE_COLOR, label="baseline")] if BASELINE_COLOR in shown else []
    handles += [Patch(color=OTHER_COLOR, label="other precision")] if OTHER_COLOR in shown else []
    axes[0][-1].legend(handles=handles, title="precision", fontsize=7, title_fontsize=8, loc="upper right")
    fig.suptitle("Inference latency (lower is better)", fontsize=10)
    return _save(fig, out)


def plot_size_vs_quality(manifests: dict[str, dict], parity_rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Scatter: model size (MB) vs agreement with fp32 (export parity), coloured by precision, labelled by
    target/precision (and the change against ground truth where `bench parity` measured it)."""
    from .latency import bundle_size_mb

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gt = {r["bundle"]: r for r in parity_rows}
    seen: set[str] = set()
    metric_names: set[str] = set()
    for bundle, m in manifests.items():
        metrics = m.get("parity", {}).get("metrics") or {}
        key = {"segmentation": "dice_mean", "classification": "top1_agreement", "embedding": "cosine_mean"}[m["task"]]
        if key not in metrics:
            continue
        metric_names.add(key)
        size = bundle_size_mb(Path(bundle), m)
        y = metrics[key]
        precision = m["precision"]
        ax.scatter(size, y, color=PRECISION_COLORS.get(precision, OTHER_COLOR),
                   label=precision if precision not in seen else None)
        seen.add(precision)
        extra = f" (GT Δ {gt[bundle].get('dice_change', gt[bundle].get('accuracy_change', 0)):+.3f})" \
            if bundle in gt else ""
        ax.annotate(f"{m['name']} {m['target']} {precision}{extra}", (size, y), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(left=0)
    ax.set_xlabel("model file size (MB)")
    ax.set_ylabel(f"agreement with PyTorch fp32 ({', '.join(sorted(metric_names)) or 'none measured'})")
    ax.set_title("size vs agreement (upper left is better)")
    if seen:
        ax.legend(title="precision", fontsize=7, title_fontsize=8)
    return _save(fig, out)
