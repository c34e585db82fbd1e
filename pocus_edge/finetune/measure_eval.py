"""`pocus eval --measure ellipse`: head circumference (mm) of predicted masks against manifest.csv's ground truth.

The truth is `head_circumference_mm` (HC18: the challenge's ellipse annotation). The masks are at the size of the
image in the folder, so the spacing is the one of that stored image, per axis: HC18 images were stretched from
original_width x original_height to width x height (800 x 540 -> 256 x 173), so a column spans
pixel_size_mm * original_width / width (= resized_pixel_size_mm) and a row pixel_size_mm * original_height / height
(0.12 % less for most images). Each row also carries the fit of the ground-truth mask itself: the floor of the
method on that image (benchmarks/measure/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.readers import read_manifest_csv
from ..errors import ConfigError, DataError
from ..runtime.measure import measure_mask
from .data import Sample

MEASURES = ("ellipse",)
TRUTH_COLUMN = "head_circumference_mm"
WITHIN_MM = 3.0


@dataclass(frozen=True)
class CircumferenceTruth:
    circumference_mm: float
    spacing: tuple[float, float]  # (row mm, column mm) of the image as stored in the folder


def _number(row: dict[str, str], key: str) -> float | None:
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return None
    return value if np.isfinite(value) and value > 0 else None


def stored_spacing(row: dict[str, str]) -> tuple[float, float] | None:
    """(row mm, column mm) per pixel of the stored image: per axis from pixel_size_mm and the original and stored
    sizes when the manifest has them, else resized_pixel_size_mm (or pixel_size_mm) on both axes; None if none."""
    size = [_number(row, k) for k in ("pixel_size_mm", "original_height", "height", "original_width", "width")]
    if all(v is not None for v in size):
        ps, oh, h, ow, w = (float(v) for v in size)  # type: ignore[arg-type]
        return (ps * oh / h, ps * ow / w)
    one = _number(row, "resized_pixel_size_mm") or _number(row, "pixel_size_mm")
    return (one, one) if one else None


def check_measure(measure: str) -> str:
    """The --measure value, or ConfigError naming the choices."""
    if measure not in MEASURES:
        raise ConfigError(f"--measure {measure!r}: choose {' or '.join(MEASURES)} (head circumference against "
                          f"manifest.csv's {TRUTH_COLUMN})")
    return measure


def read_truth(root: Path, samples: list[Sample], measure: str) -> dict[str, CircumferenceTruth]:
    """{sample image path: truth} for every sample; ConfigError for an unknown measure, DataError naming the column
    or image when the manifest cannot give a truth for one of them."""
    check_measure(measure)
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise DataError(f"--measure {measure}: {path} not found; the truth comes from its {TRUTH_COLUMN} column")
    rows = {str(Path(root) / r["file"]): r for r in read_manifest_csv(Path(root))}
    truth = {}
    for s in samples:
        row = rows.get(s.image, {})
        hc, spacing = _number(row, TRUTH_COLUMN), stored_spacing(row)
        if hc is None or spacing is None:
            missing = TRUTH_COLUMN if hc is None else "pixel_size_mm / resized_pixel_size_mm"
            raise DataError(f"--measure {measure}: {path} gives no positive {missing} for {row.get('file', s.image)}; "
                            f"every evaluated image needs {TRUTH_COLUMN} and a pixel size")
        truth[s.image] = CircumferenceTruth(hc, spacing)
    return truth


def _circumference(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[float | None, bool]:
    fit = measure_mask(mask, spacing, ["ellipse"])["ellipse"]
    return (None, False) if fit is None else (fit["mm"]["circumference"], fit["touches_border"])


def circumference_row(pred: np.ndarray, mask: np.ndarray, truth: CircumferenceTruth) -> dict[str, Any]:
    """Per-image fields: truth, prediction (None when the mask is empty), signed and absolute difference, and the
    ground-truth mask's own fit (the floor)."""
    predicted, border = _circumference(pred, truth.spacing)
    floor, _ = _circumference(mask, truth.spacing)
    diff = None if predicted is None else predicted - truth.circumference_mm
    return {"hc_true_mm": truth.circumference_mm, "hc_pred_mm": predicted, "hc_diff_mm": diff,
            "hc_abs_diff_mm": None if diff is None else abs(diff), "hc_pred_touches_border": border,
            "hc_gt_mask_mm": floor, "pixel_spacing_mm": list(truth.spacing)}


def circumference_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean absolute difference (mm), its SD (ddof 1), mean signed difference, share within 3 mm (an empty mask
    counts as not within) and the ground-truth masks' own mean absolute difference, over `rows`."""
    measured = [r for r in rows if r["hc_abs_diff_mm"] is not None]
    abs_diff = np.array([r["hc_abs_diff_mm"] for r in measured], dtype=float)
    floor = np.array([abs(r["hc_gt_mask_mm"] - r["hc_true_mm"]) for r in rows if r["hc_gt_mask_mm"] is not None])
    return {
        "images": len(rows), "measured": len(measured), "no_structure_images": len(rows) - len(measured),
        "mean_abs_diff_mm": float(abs_diff.mean()) if len(abs_diff) else None,
        "sd_abs_diff_mm": float(abs_diff.std(ddof=1)) if len(abs_diff) > 1 else None,
        "mean_diff_mm": float(np.mean([r["hc_diff_mm"] for r in measured])) if measured else None,
        f"within_{WITHIN_MM:g}mm": float((abs_diff <= WITHIN_MM).sum() / len(rows)) if rows else None,
        "gt_mask_mean_abs_diff_mm": float(floor.mean()) if len(floor) else None,
    }
