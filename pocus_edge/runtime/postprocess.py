"""Post-processing in numpy only, the one home for it: activation, mask resize, threshold/argmax, mask PNG values, Dice.

Used by the runtime (results.py, stream.py, selftest.py, predict.py), evaluation (finetune/evaluate.py), export
parity (export/parity.py) and, through the runtime, the Android golden generator (android_demo/tools/); the JVM
core mirrors these rules. The settings are the manifest's `postprocessing` block (for a checkpoint, the same block
built from its card by `postprocessing_for`):

- activation: `sigmoid` (per channel), `softmax` (over channels), `none` (already probabilities), `l2_normalize`
  (embeddings; not an activation of a probability map, so `activate` leaves those values as they are).
- mask_resize: `bilinear_probabilities` resizes the probabilities (not the mask) back to the input image size with
  the pre-processing's antialiased bilinear weights, then the mask is taken; `none` keeps the model's size.
- threshold: a one-channel map's mask is `probability >= threshold`; the threshold is always the model's (manifest
  or card), never a silent default: a one-channel model without one is an error. K > 1 channels: argmax.
- mask PNG: a binary mask is written as 0 / 255, a multi-class mask as the class index (0 .. K-1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .preprocess import resize_bilinear

DEFAULT_THRESHOLD = 0.5  # what `pocus finetune` writes into a segmentation card; only a model in training uses it
BINARY_MASK_VALUES = "0 = background, 255 = foreground"
CLASS_MASK_VALUES = "class index into labels (0 .. number of labels - 1)"


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float32)."""
    out = np.empty_like(x, dtype=np.float32)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax along `axis`, max-shifted for stability (float32)."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return (z / z.sum(axis=axis, keepdims=True)).astype(np.float32)


def activate(x: np.ndarray, activation: str, axis: int = 0) -> np.ndarray:
    """Raw outputs -> probabilities by the manifest's activation; `axis` is the channel axis (0 for one sample's
    C x H x W or C, 1 for a batch). `none` and `l2_normalize` return the values as float32."""
    if activation == "sigmoid":
        return sigmoid(x)
    if activation == "softmax":
        return softmax(x, axis=axis)
    return np.asarray(x, dtype=np.float32)


def binary_threshold(threshold: float | None) -> float:
    """The model's threshold for a one-channel mask; ConfigError when the manifest or card has none."""
    if threshold is None or isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(
            f"postprocessing threshold {threshold!r}: a one-channel segmentation model needs a probability threshold "
            "in [0, 1] (manifest postprocessing.threshold, or the checkpoint card's 'threshold'); re-export the bundle "
            "from a checkpoint whose card sets it")
    return float(threshold)


def to_mask(probs: np.ndarray, threshold: float | None, axis: int = 0) -> np.ndarray:
    """uint8 mask from probabilities with channels on `axis`: one channel -> probability >= threshold (0/1);
    K > 1 channels -> argmax (the class index)."""
    if probs.shape[axis] == 1:
        return (np.take(probs, 0, axis=axis) >= binary_threshold(threshold)).astype(np.uint8)
    return probs.argmax(axis=axis).astype(np.uint8)


def resize_probabilities(probs: np.ndarray, size: tuple[int, int], mask_resize: str) -> np.ndarray:
    """K x h x w probabilities at the image size (H, W) when `mask_resize` is bilinear_probabilities."""
    if mask_resize == "bilinear_probabilities" and probs.shape[-2:] != tuple(size):
        return resize_bilinear(probs, int(size[0]), int(size[1]))
    return probs


def segment(logits: np.ndarray, post: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One sample's K x h x w segmentation output -> (K x H x W probabilities, H x W uint8 mask) at the image size."""
    probs = resize_probabilities(activate(logits, post["activation"], axis=0), size, post["mask_resize"])
    return probs, to_mask(probs, post.get("threshold"), axis=0)


def classify(logits: np.ndarray, post: dict[str, Any]) -> np.ndarray:
    """One sample's K outputs -> K class probabilities (float32)."""
    return activate(logits, post["activation"], axis=0)


def postprocessing_for(task: str, labels: list[str], threshold: float | None) -> dict[str, Any]:
    """The manifest's postprocessing block for a model of `task` with these labels and its card's threshold."""
    if task == "segmentation":
        return {"activation": "sigmoid" if labels and len(labels) <= 2 else "softmax", "threshold": threshold,
                "mask_resize": "bilinear_probabilities"}
    if task == "classification":
        return {"activation": "softmax", "threshold": None, "mask_resize": "none"}
    return {"activation": "l2_normalize", "threshold": None, "mask_resize": "none"}


def segmentation_classes(manifest: dict[str, Any]) -> int:
    """Output channels of a segmentation bundle (1 = binary mask, K > 1 = class-index mask)."""
    spec = manifest["outputs"][0]
    return int(spec["shape"][3] if spec.get("layout") == "NHWC" else spec["shape"][1])


def mask_png(mask: np.ndarray, classes: int) -> np.ndarray:
    """The mask as written to a PNG: binary (one channel) 0 / 255; multi-class the class index itself."""
    return mask.astype(np.uint8) * np.uint8(255 if classes == 1 else 1)


def mask_values(classes: int) -> str:
    """What the pixel values of `mask_png` mean (results.json `mask_values`)."""
    return BINARY_MASK_VALUES if classes == 1 else CLASS_MASK_VALUES


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|) of two binary masks; two empty masks agree perfectly (1.0), one empty: 0."""
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def mask_dice(a: np.ndarray, b: np.ndarray, classes: int) -> float:
    """Agreement of two masks: Dice for a binary mask, the mean Dice over foreground classes 1..K-1 otherwise."""
    if classes == 1:
        return dice(a, b)
    return float(np.mean([dice(a == k, b == k) for k in range(1, classes)]))
