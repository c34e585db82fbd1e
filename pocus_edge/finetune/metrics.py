"""Evaluation metrics, pure numpy: Dice, IoU, HD95 (pixels and mm), accuracy, macro-F1, confusion matrix.

Empty-mask rule (Dice and IoU): when prediction and ground truth are both empty the score is 1 (a correct
"no lesion"); when exactly one is empty it is 0. HD95 is undefined when either mask is empty: it is
returned as NaN and left out of means (the count of such images is reported beside the mean).
"""

from __future__ import annotations

import numpy as np

from ..runtime.postprocess import dice

dice_score = dice  # 2|A∩B| / (|A|+|B|), both empty = 1: the one Dice, shared with export parity and the self-test


def iou_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """|A∩B| / |A∪B|; both empty = 1."""
    p, t = pred.astype(bool), truth.astype(bool)
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: float = 1.0) -> float:
    """95th percentile of the symmetric surface distances (in pixels x spacing); NaN if a mask is empty."""
    from scipy.ndimage import distance_transform_edt

    p, t = pred.astype(bool), truth.astype(bool)
    if not p.any() or not t.any():
        return float("nan")
    sp, st = _surface(p), _surface(t)
    to_truth = distance_transform_edt(~st)[sp]
    to_pred = distance_transform_edt(~sp)[st]
    return float(np.percentile(np.concatenate([to_truth, to_pred]), 95) * spacing)


def confusion_matrix(truth: list[int], pred: list[int], num_classes: int) -> np.ndarray:
    """num_classes x num_classes counts, rows = truth, columns = prediction."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        cm[t, p] += 1
    return cm


def accuracy(truth: list[int], pred: list[int]) -> float:
    return float(np.mean(np.asarray(truth) == np.asarray(pred))) if truth else float("nan")


def macro_f1(truth: list[int], pred: list[int], num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in truth or prediction."""
    cm = confusion_matrix(truth, pred, num_classes)
    scores = []
    for k in range(num_classes):
        tp, fp, fn = cm[k, k], cm[:, k].sum() - cm[k, k], cm[k, :].sum() - cm[k, k]
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def mean_ignoring_nan(values: list[float]) -> tuple[float, int]:
    """(mean of finite values, how many were NaN)."""
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    return (float(finite.mean()) if finite.size else float("nan")), int((~np.isfinite(arr)).sum())
