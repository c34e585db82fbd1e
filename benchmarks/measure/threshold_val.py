"""Head-circumference error vs mask threshold on the VALIDATION split (never the test split) of a checkpoint.

Usage: .venv/bin/python benchmarks/measure/threshold_val.py CHECKPOINT [--data ../shared/data/hc18] [--split-seed 0]
       [--thresholds 0.5 0.6 0.7 0.8 0.9]
Prints one line per threshold: mean signed, mean absolute and median absolute difference (mm) against
head_circumference_mm, with the runtime's post-processing at that threshold. It asks whether the kd benchmark's
over-large masks are a threshold matter (calibratable on validation) or a model-quality matter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pocus_edge.finetune.data import load_pair, read_samples, split_samples
from pocus_edge.finetune.measure_eval import circumference_row, read_truth
from pocus_edge.models.inference import frame_outputs
from pocus_edge.models.registry import load_task_model
from pocus_edge.runtime.images import to_gray01
from pocus_edge.runtime.postprocess import postprocessing_for, segment
from pocus_edge.runtime.preprocess import normalization


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hc18"))
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, card = load_task_model(args.checkpoint)
    samples = split_samples(read_samples(args.data, "segmentation"), args.split_seed, False)["val"]
    truth = read_truth(args.data, samples, "ellipse")
    pairs = [load_pair(s) for s in samples]
    outputs = frame_outputs(model, [to_gray01(image) for image, _ in pairs], normalization(card["input_size"][0]))
    print(f"{args.checkpoint}: validation split ({len(samples)} images, split seed {args.split_seed})")
    for threshold in args.thresholds:
        post = postprocessing_for("segmentation", card["labels"], threshold)
        diffs = [circumference_row(segment(out, post, image.shape)[1] > 0, mask, truth[s.image])["hc_diff_mm"]
                 for s, (image, mask), out in zip(samples, pairs, outputs, strict=True)]
        d = np.array([np.nan if v is None else v for v in diffs])
        print(f"threshold {threshold:.2f}: signed {np.nanmean(d):+.2f} mm, mean abs {np.nanmean(np.abs(d)):.2f} mm, "
              f"median abs {np.nanmedian(np.abs(d)):.2f} mm, empty masks {int(np.isnan(d).sum())}")


if __name__ == "__main__":
    main()
