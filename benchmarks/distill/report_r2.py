"""Turn a distillation run's metrics.jsonl into the Markdown record of benchmarks/distill/ (and a PNG curve)."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml


def main(run_dir: str) -> None:
    run = Path(run_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    evals = [r for r in records if "held_out_r2" in r]
    losses = [r for r in records if "loss" in r]
    finished = next(r for r in records if r.get("event") == "finished")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    out = Path(__file__).parent
    (out / "r2_real_data_metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    _plot(evals, losses, out / "r2_real_data.png")
    print("# Distillation on real ultrasound, CPU scale: held-out token R²\n")
    print(f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
          f"{_cpu_count()} CPU cores, no GPU; torch threads {cfg['threads']}")
    print("- Command: `benchmarks/distill/r2_real_data.sh` (runs `pocus distill`, flags in the script)")
    print(f"- Data: {', '.join(cfg['data'])}: {finished['train_images']} training frames, "
          f"{finished['held_out_images']} held-out frames (split by image for BUSI, case_id for HC18, source_file "
          f"for lung clips), {finished['duplicates_removed']} exact duplicates removed, "
          f"{finished['skipped_files']} unreadable files")
    print(f"- Teacher: {cfg['teacher']} with **random weights** (no DINOv3 weights may be downloaded here), blocks "
          f"{cfg['blocks'] or 'last two'}, {cfg['aggregate']}, final LayerNorm applied: {cfg['teacher_norm']}")
    print(f"- Student: {cfg['student']}, head hidden {cfg['head_hidden']}, image {cfg['image_size']} px "
          f"(teacher grid {cfg['image_size'] // 16}x{cfg['image_size'] // 16}), batch {cfg['batch_size']}, "
          f"{finished['steps']} steps, lr {cfg['lr']}, aug {cfg['aug']}, mixup {cfg['mixup']}")
    print(f"- Wall time of the training loop: {finished['seconds_this_session'] / 60:.1f} min "
          f"({finished['images_per_s']} images/s including held-out evaluations)\n")
    print("| step | held-out R² | train loss (mean of last 5 logged) |")
    print("|---:|---:|---:|")
    for e in evals:
        recent = [r["loss"] for r in losses if r["step"] <= e["step"]][-5:]
        loss = f"{sum(recent) / len(recent):.4f}" if recent else "–"
        print(f"| {e['step']} | {e['held_out_r2']:.4f} | {loss} |")
    print("\n![held-out R² and loss](r2_real_data.png)")


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _plot(evals: list, losses: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot([e["step"] for e in evals], [e["held_out_r2"] for e in evals], marker="o")
    ax[0].set(xlabel="optimizer step", ylabel="held-out token R²", title="student vs teacher tokens")
    ax[0].grid(alpha=0.3)
    ax[1].plot([r["step"] for r in losses], [r["loss"] for r in losses])
    ax[1].set(xlabel="optimizer step", ylabel="eq. (6) loss", title="training loss", yscale="log")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
