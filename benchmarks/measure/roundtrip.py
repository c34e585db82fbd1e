"""Does the pre/post-processing itself bias head circumference? Ground-truth masks through the model's grid and back.

Usage: .venv/bin/python benchmarks/measure/roundtrip.py [--data ../shared/data/hc18] [--sizes 128 256] [--out DIR]
Each HC18 mask is taken to the model's input grid as training does (antialiased bilinear, >= 0.5), turned into
confident logits, and brought back to the stored image size by the runtime's own post-processing (`segment`:
sigmoid, bilinear resize of the probabilities, the card's 0.5 threshold); the ellipse fit of the result is compared
with the fit of the original mask. What remains is what the pipeline adds at that grid, with a perfect model.
Writes roundtrip.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pocus_edge.finetune.data import load_pair, read_samples, split_samples
from pocus_edge.finetune.measure_eval import read_truth
from pocus_edge.runtime.measure import measure_mask
from pocus_edge.runtime.postprocess import DEFAULT_THRESHOLD, postprocessing_for, segment
from pocus_edge.runtime.preprocess import resize_bilinear

CONFIDENT_LOGIT = 12.0  # sigmoid(12) = 0.999994: a model that is sure of every pixel


def through_the_grid(mask: np.ndarray, size: int) -> np.ndarray:
    """The mask a perfect model would give at the stored size: training's target at size x size, then `segment`."""
    target = resize_bilinear(mask.astype(np.float32), size, size) >= 0.5  # as finetune/train.py _augment
    logits = np.where(target, CONFIDENT_LOGIT, -CONFIDENT_LOGIT)[None].astype(np.float32)
    post = postprocessing_for("segmentation", ["background", "fetal_head"], DEFAULT_THRESHOLD)
    return segment(logits, post, mask.shape)[1]


def circumference(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    fit = measure_mask(mask, spacing, ["ellipse"])["ellipse"]
    if fit is None:
        raise SystemExit("a mask lost all its pixels on the way through the grid")
    return float(fit["mm"]["circumference"])


def roundtrip(data: Path, sizes: list[int], split: str | None = "test", limit: int | None = None) -> dict:
    """Per size: signed and absolute difference (mm) between the fit after the round trip and the original mask's fit,
    and of both against the annotated head_circumference_mm."""
    samples = read_samples(data, "segmentation")
    if split:
        samples = split_samples(samples, 0, False)[split]
    samples = samples[:limit] if limit else samples
    truth = read_truth(data, samples, "ellipse")
    out: dict = {"data": str(data), "split": split or "all", "images": len(samples), "sizes": {}}
    masks = [(load_pair(s)[1], truth[s.image]) for s in samples]
    original = np.array([circumference(m, t.spacing) for m, t in masks])
    true = np.array([t.circumference_mm for _, t in masks])
    for size in sizes:
        back = np.array([circumference(through_the_grid(m, size), t.spacing) for m, t in masks])
        added, vs_truth = back - original, back - true
        out["sizes"][str(size)] = {
            "added_by_pipeline_mm": {"mean": float(added.mean()), "mean_abs": float(np.abs(added).mean()),
                                     "max_abs": float(np.abs(added).max())},
            "vs_annotation_mm": {"mean": float(vs_truth.mean()), "mean_abs": float(np.abs(vs_truth).mean())}}
    out["gt_mask_vs_annotation_mm"] = {"mean": float((original - true).mean()),
                                       "mean_abs": float(np.abs(original - true).mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/hc18"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--split", default="test", help="split of seed 0 to use, or 'all'")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    result = roundtrip(args.data, args.sizes, None if args.split == "all" else args.split)
    (args.out / "roundtrip.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
