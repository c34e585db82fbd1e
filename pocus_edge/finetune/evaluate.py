"""Evaluate a model on samples with the runtime's pre/post-processing: per-image rows + a summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..runtime.images import to_gray01
from ..runtime.postprocess import DEFAULT_THRESHOLD, classify, postprocessing_for, segment
from ..runtime.preprocess import normalization
from ..runtime.results import check_finite
from .data import Sample, load_pair
from .measure_eval import CircumferenceTruth, circumference_row
from .metrics import accuracy, confusion_matrix, dice_score, hd95, iou_score, macro_f1, mean_ignoring_nan


def summarize(task: str, rows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    if task == "segmentation":
        hd_px, nan_count = mean_ignoring_nan([r["hd95_px"] for r in rows])
        hd_mm, _ = mean_ignoring_nan([r["hd95_mm"] for r in rows])
        return {"dice": float(np.mean([r["dice"] for r in rows])), "iou": float(np.mean([r["iou"] for r in rows])),
                "hd95_px": hd_px, "hd95_mm": hd_mm, "hd95_undefined_images": nan_count, "images": len(rows)}
    truth = [labels.index(r["label"]) for r in rows]
    pred = [labels.index(r["predicted"]) for r in rows]
    return {"accuracy": accuracy(truth, pred), "macro_f1": macro_f1(truth, pred, len(labels)),
            "confusion_matrix": confusion_matrix(truth, pred, len(labels)).tolist(), "labels": labels,
            "images": len(rows)}


def evaluate_outputs(task: str, samples: list[Sample], labels: list[str],
                     predict: Callable[[list[np.ndarray]], np.ndarray], stage: str = "eval",
                     truth: dict[str, CircumferenceTruth] | None = None,
                     post: dict[str, Any] | None = None) -> dict[str, Any]:
    """`predict(gray frames) -> raw float outputs (N x C x S x S or N x K)`; compares to ground truth.

    `post` is the model's postprocessing block (a bundle's manifest, or `postprocessing_for` a checkpoint's card),
    applied exactly as the runtime applies it (runtime/postprocess.py: activation, probabilities resized to the
    image, the model's threshold or argmax); None only for a model still in training, whose card will say
    DEFAULT_THRESHOLD. With `truth` (segmentation) each row also gets the head circumference of its mask against
    the truth. A NaN/inf output is a NonFiniteOutputError naming `stage` and the image, never a metric made from it."""
    post = post or postprocessing_for(task, labels, DEFAULT_THRESHOLD if task == "segmentation" else None)
    rows = []
    for start in range(0, len(samples), 16):
        chunk = samples[start:start + 16]
        pairs = [load_pair(s) for s in chunk]
        outputs = predict([to_gray01(image) for image, _ in pairs])
        for s, (image, mask), out in zip(chunk, pairs, outputs, strict=True):
            check_finite(np.asarray(out), f"{stage}: model output on {s.image}")
            if task == "segmentation":
                pred = segment(out, post, image.shape)[1] > 0  # foreground: any class but 0
                row = {"image": s.image, "dice": dice_score(pred, mask), "iou": iou_score(pred, mask),
                       "hd95_px": hd95(pred, mask)}
                row["hd95_mm"] = row["hd95_px"] * s.pixel_size_mm if s.pixel_size_mm else float("nan")
                if truth is not None:
                    row.update(circumference_row(pred, mask, truth[s.image]))
            else:
                p = classify(out, post)
                row = {"image": s.image, "label": s.label, "predicted": labels[int(np.argmax(p))],
                       "confidence": float(p.max())}
            rows.append(row)
    return {"per_image": rows, "summary": summarize(task, rows, labels)}


def evaluate_model(model, samples: list[Sample], task: str, labels: list[str], image_size: int,
                   stage: str = "evaluation") -> dict[str, Any]:
    """Metrics of a torch model (eval mode, no grad) on samples; `stage` names the step in errors."""
    from ..models.inference import frame_outputs

    pre = normalization(image_size)
    return evaluate_outputs(task, samples, labels, lambda grays: frame_outputs(model, grays, pre), stage)
