"""Where an int8 bundle disagrees with its fp32 bundle, measured against the fp32 model's own confidence.

Mask Dice agreement and top-1 agreement count every flipped pixel or label alike. A flip where the fp32 model
itself sits at the decision boundary (probability ~0.5, or two classes ~tied) is not the same failure as one where
fp32 was sure. This script runs both bundles on the same frames (the held-out parity frames of the int8 proof) and
reports, for segmentation: the share of pixels near the threshold, the fp32 probability of the flipped pixels,
and the Dice agreement outside a band around the threshold; for classification: the fp32 top-1 margins of all
frames and of the flipped ones. Diagnostic only: the proof's goals stay the plain agreements.

    .venv/bin/python benchmarks/export/int8_proof/where_int8_differs.py FP32_BUNDLE INT8_BUNDLE IMAGES_DIR [--json F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BANDS = (0.05, 0.1, 0.2)  # |p - 0.5| bands (segmentation) / top-1 margins (classification)
BATCH = 16


def _probabilities(bundle: Path, images: list[Path]) -> np.ndarray:
    from pocus_edge.runtime import load

    predictor = load(bundle)
    out = np.concatenate([predictor.raw_outputs(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
    if not np.isfinite(out).all():
        raise SystemExit(f"{bundle}: non-finite outputs")
    if out.ndim == 4:  # N x 1 x H x W mask logits
        if out.shape[1] != 1:
            raise SystemExit(f"{bundle}: {out.shape[1]}-class masks; this diagnostic handles binary masks only")
        return 1.0 / (1.0 + np.exp(-out[:, 0].astype(np.float64)))
    z = out.astype(np.float64) - out.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def segmentation(p32: np.ndarray, p8: np.ndarray) -> dict:
    m32, m8 = p32 >= 0.5, p8 >= 0.5
    flipped = m32 != m8
    distance = np.abs(p32 - 0.5)
    result = {"frames": int(len(p32)), "pixels": int(p32.size), "flipped_pixels": int(flipped.sum()),
              "dice_agreement_mean": float(np.mean([_dice(a, b) for a, b in zip(m32, m8, strict=True)])),
              "fp32_foreground_fraction": float(m32.mean())}
    for band in BANDS:
        near = distance < band
        outside = [_dice(a[~n], b[~n]) for a, b, n in zip(m32, m8, near, strict=True)]
        result[f"band_{band}"] = {
            "pixels_near_threshold": float(near.mean()),
            "foreground_pixels_near_threshold": float(near[m32].mean()) if m32.any() else 0.0,
            "flipped_pixels_in_band": float(near[flipped].mean()) if flipped.any() else 1.0,
            "dice_agreement_mean_outside_band": float(np.mean(outside)),
            "dice_agreement_min_outside_band": float(np.min(outside)),
        }
    return result


def classification(p32: np.ndarray, p8: np.ndarray) -> dict:
    top2 = np.sort(p32, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = p32.argmax(1) != p8.argmax(1)
    result = {"frames": int(len(p32)), "flipped_frames": int(flipped.sum()),
              "top1_agreement": float(1 - flipped.mean()),
              "fp32_margin_median": float(np.median(margin)),
              "fp32_margin_of_flipped": [round(float(m), 4) for m in np.sort(margin[flipped])]}
    for band in BANDS:
        sure = margin >= band
        result[f"margin_{band}"] = {"frames_with_margin": int(sure.sum()),
                                    "top1_agreement_among_them": float(1 - flipped[sure].mean()) if sure.any()
                                    else None}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path)
    parser.add_argument("int8", type=Path)
    parser.add_argument("images", type=Path, help="a folder of frames (searched recursively for .png/.jpg)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")
                    and "mask" not in p.name and "masks" not in p.parts)
    if not images:
        raise SystemExit(f"{args.images}: no frames")
    p32, p8 = _probabilities(args.fp32, images), _probabilities(args.int8, images)
    result = segmentation(p32, p8) if p32.ndim == 3 else classification(p32, p8)
    result.update(fp32=str(args.fp32), int8=str(args.int8), images=str(args.images))
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
