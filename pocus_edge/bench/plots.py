"""PNG plots for the suite: latency by precision per backend, and bundle size against quality (Pareto view)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(rows: list[dict[str, Any]], out: Path) -> Path:
    """Grouped bars: p50 latency per (model, backend/target, precision), one panel per thread count."""
    plt = _plt()
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(1, len(threads), figsize=(7 * len(threads), 4.5), squeeze=False)
    for ax, t in zip(axes[0], threads, strict=True):
        sel = [r for r in rows if r["threads"] == t]
        labels = [f"{r['model']}\n{r['target']} {r['precision']}" if r["target"] != "baseline"
                  else f"{r['model']}\n{r['backend'][:24]}" for r in sel]
        colors = ["#888888" if r["target"] == "baseline" else {"fp32": "#1f77b4", "fp16": "#ff7f0e",
                                                                "int8": "#2ca02c"}[r["precision"]] for r in sel]
        ax.bar(range(len(sel)), [r["latency_ms"]["p50"] for r in sel], color=colors)
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels(labels, rotation=75, fontsize=7)
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"{t} thread(s) — {sel[0]['device']['label'] if sel else ''}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_size_vs_quality(manifests: dict[str, dict], parity_rows: list[dict[str, Any]], out: Path) -> Path:
    """Scatter: model size (MB) vs agreement with fp32 (export parity), labelled by target/precision."""
    from .latency import bundle_size_mb

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gt = {r["bundle"]: r for r in parity_rows}
    for bundle, m in manifests.items():
        metrics = m.get("parity", {}).get("metrics") or {}
        key = {"segmentation": "dice_mean", "classification": "top1_agreement", "embedding": "cosine_mean"}[m["task"]]
        if key not in metrics:
            continue
        size = bundle_size_mb(Path(bundle), m)
        y = metrics[key]
        ax.scatter(size, y)
        extra = f" (GT Δ {gt[bundle].get('dice_change', gt[bundle].get('accuracy_change', 0)):+.3f})" \
            if bundle in gt else ""
        ax.annotate(f"{m['name']} {m['target']} {m['precision']}{extra}", (size, y), fontsize=6)
    ax.set_xlabel("model file size (MB)")
    ax.set_ylabel("agreement with PyTorch fp32")
    ax.set_title("size vs agreement (upper left is better)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
