"""Parity: the exported model, run through the runtime, against PyTorch fp32 on the same pre-processed frames.

Segmentation: per-image mask Dice agreement (both masks empty counts as 1) and mean |Δprob|.
Classification: top-1 agreement and max |Δprob|. Embedding: cosine similarity (min and mean).
Probabilities and masks come from the model's postprocessing block (the manifest's, or `postprocessing_for` its
card): the activation and threshold the runtime applies, never guessed from the channel count.
Thresholds depend on the precision and can be overridden; failing them fails the export, and so does any
NaN/inf in either model's outputs (a comparison with NaN is always False and would otherwise pass).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..models.inference import frame_outputs
from ..runtime.postprocess import activate, mask_dice, to_mask
from .base import ExportError

# metric -> (direction, fp32, fp16, int8); "min": value must be >= threshold, "max": value must be <= threshold
DEFAULT_THRESHOLDS: dict[str, dict[str, tuple[str, float, float, float]]] = {
    "segmentation": {"dice_mean": ("min", 0.99, 0.98, 0.95), "dice_min": ("min", 0.95, 0.90, 0.70),
                     "prob_abs_diff_mean": ("max", 1e-3, 1e-2, 0.05)},
    "classification": {"top1_agreement": ("min", 0.99, 0.98, 0.90), "prob_abs_diff_max": ("max", 1e-3, 0.02, 0.25)},
    "embedding": {"cosine_min": ("min", 0.9999, 0.999, 0.95), "cosine_mean": ("min", 0.99999, 0.9995, 0.98)},
}
PRECISION_COLUMN = {"fp32": 1, "fp16": 2, "int8": 3}


def thresholds_for(task: str, precision: str, overrides: dict[str, float] | None = None) -> dict[str, list]:
    """{metric: [direction, value]} for this task and precision, with user overrides applied."""
    table = {m: [row[0], row[PRECISION_COLUMN[precision]]] for m, row in DEFAULT_THRESHOLDS[task].items()}
    for key, value in (overrides or {}).items():
        if key not in table:
            raise ConfigError(f"--parity-threshold {key}={value}: no parity metric {key!r} for a {task} model; "
                              f"choose from {', '.join(table)}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"--parity-threshold {key}={value}: a threshold must be a finite number")
        table[key][1] = float(value)
    return table


def reference_outputs(model: nn.Module, images: list[np.ndarray], preprocessing: dict[str, Any]) -> np.ndarray:
    """PyTorch fp32 outputs on normalised 3-channel input built by the runtime's own pre-processing."""
    return frame_outputs(model, images, preprocessing, batch_size=8)


def compare(task: str, ref: np.ndarray, out: np.ndarray, post: dict[str, Any],
            out_post: dict[str, Any] | None = None) -> dict[str, float]:
    """Parity metrics between reference and exported outputs (N x ... each); non-finite outputs are an error.

    `post`: the model's postprocessing block (activation, threshold; runtime/postprocess.py). `out_post`: the
    exported model's own block where its outputs mean something else (a Core ML classifier returns probabilities:
    activation none); default `post`."""
    if ref.shape != out.shape:
        raise ExportError(f"parity: the exported model's output shape {tuple(out.shape)} differs from PyTorch's "
                          f"{tuple(ref.shape)}; the bundle was not exported from this checkpoint (bench parity: pass "
                          "the --reference it came from) or the conversion changed the graph: re-export it")
    check_finite(ref, "the PyTorch fp32 reference")
    check_finite(out, "the exported model")
    out_post = out_post or post
    if task == "segmentation":  # masks at model resolution, by the runtime's rules (runtime/postprocess.py)
        pr, po = activate(ref, post["activation"], axis=1), activate(out, out_post["activation"], axis=1)
        mr, mo = to_mask(pr, post.get("threshold"), axis=1), to_mask(po, out_post.get("threshold"), axis=1)
        dices = [mask_dice(mr[i], mo[i], ref.shape[1]) for i in range(len(ref))]  # multi-class: foreground mean
        diff = np.abs(pr - po)
        return {"dice_mean": float(np.mean(dices)), "dice_min": float(np.min(dices)),
                "prob_abs_diff_mean": float(diff.mean()), "prob_abs_diff_max": float(diff.max()),
                "foreground_fraction_reference": float(np.mean(mr > 0))}
    if task == "classification":
        pr, po = activate(ref, post["activation"], axis=1), activate(out, out_post["activation"], axis=1)
        return {"top1_agreement": float(np.mean(pr.argmax(1) == po.argmax(1))),
                "prob_abs_diff_max": float(np.abs(pr - po).max()),
                "prob_abs_diff_mean": float(np.abs(pr - po).mean())}
    r = ref.reshape(len(ref), -1)
    o = out.reshape(len(out), -1)
    cos = (r * o).sum(1) / np.maximum(np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1), 1e-12)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}


def check_finite(outputs: np.ndarray, what: str) -> None:
    """Raise ExportError when outputs hold NaN/inf: every comparison with NaN is False, so it would pass."""
    bad = ~np.isfinite(outputs)
    if bad.any():
        raise ExportError(
            f"export parity: {what} gave {int(bad.sum())} non-finite values (NaN/inf) of {outputs.size} on the "
            "parity images; the model's weights hold NaN/inf or it overflows at this precision. Check the "
            "checkpoint (and the precision); nothing was exported")


def judge(metrics: dict[str, float], thresholds: dict[str, list]) -> list[str]:
    """Failures as readable strings ('dice_mean 0.91 < 0.95'); empty when all thresholds hold (NaN never does)."""
    failures = []
    for name, (direction, limit) in thresholds.items():
        value = metrics[name]
        if not math.isfinite(value):
            failures.append(f"{name} is {value}, not a finite number")
            continue
        if direction == "min" and value < limit:
            failures.append(f"{name} {value:.5g} < {limit:g}")
        if direction == "max" and value > limit:
            failures.append(f"{name} {value:.5g} > {limit:g}")
    return failures
