"""Markdown rows for benchmarks/downstream/README.md from the runs' metrics.json files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = {"busi-seg-rand": "Dice 0.5525 (full FT)", "busi-cls-rand": "accuracy 0.6561 (full FT)",
         "busi-seg-rand-probe": "Dice 0.4365 (linear probe)", "hc18-seg-rand": "-",
         # the distilled student of benchmarks/distill (random-weight teacher): no paper row applies
         "busi-seg-student": "-", "busi-cls-student": "-", "busi-seg-student-probe": "-", "hc18-seg-student": "-"}


def main(runs: Path) -> None:
    print("| run | task | images train/val/test | image size | epochs | wall time | test metrics | paper R50-Rand |")
    print("|---|---|---|---|---|---|---|---|")
    for name in PAPER:
        path = runs / name / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        t = m["test"]
        if m["task"] == "segmentation":
            metric = f"Dice {t['dice']:.4f}, IoU {t['iou']:.4f}, HD95 {t['hd95_px']:.1f} px"
            if t.get("hd95_mm") == t.get("hd95_mm") and t.get("hd95_mm") is not None:
                metric += f" / {t['hd95_mm']:.2f} mm"
        else:
            metric = f"accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}"
        steps = len(m["history"])
        probe = " (linear probe)" if m["linear_probe"] else ""
        print(f"| {name} | {m['task']}{probe} | {m['train_images']}/{m['val_images']}/{m['test_images']} | "
              f"{m['image_size']} | {steps} | {m['wall_time_s'] / 60:.1f} min | {metric} | {PAPER[name]} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
