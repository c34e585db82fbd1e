"""Pre-processing from the manifest, in numpy only: resize, normalise, lay out, quantise.

The resize is PIL-style antialiased bilinear (a triangle filter whose support widens by the
downscale factor, pixel centres at +0.5), written as two small weight matrices so the Android core
can reproduce it number for number: weights and sums are float64 and only the result is rounded to
float32, so the summation order (BLAS here, loops on the JVM) cannot change a float32 value in practice.
The same function resizes mask probabilities back up.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=64)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """out_size x in_size float64 matrix of antialiased bilinear weights (rows sum to 1)."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    src = np.arange(in_size, dtype=np.float64) + 0.5
    dist = np.abs(src[None, :] - centers[:, None]) / support
    weights = np.clip(1.0 - dist, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize H x W (or C x H x W) with antialiased bilinear weights; float64 inside, float32 out."""
    wy = resize_weights(image.shape[-2], height)
    wx = resize_weights(image.shape[-1], width)
    return np.ascontiguousarray(wy @ image.astype(np.float64) @ wx.T, dtype=np.float32)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """Affine quantisation q = clamp(round(x / scale) + zero_point) to int8/uint8 (round half to even)."""
    info = np.iinfo(np.dtype(dtype))
    q = np.rint(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale as float32."""
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


# The normalisation every model here is trained and exported with; the one definition (data/transforms.py, the
# model cards and TaskSpec import it from here, so the torch-free runtime needs no torch module to read it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalization(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Any]:
    """The pre-processing fields `normalized_chw` needs for a normalised 3-channel model input."""
    return {"image_size": [image_size, image_size], "raw_input": False, "scale": 1 / 255, "mean": list(mean),
            "std": list(std)}


def normalized_chw(gray: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """Gray H x W in [0,1] -> the model's C x S x S float32 input (before layout and quantisation)."""
    height, width = pre["image_size"]
    resized = resize_bilinear(gray, height, width)
    if pre["raw_input"]:
        return (resized / pre["scale"])[None].astype(np.float32)  # pixels in [0, 255]; the model normalises
    mean = np.asarray(pre["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(pre["std"], dtype=np.float32)[:, None, None]
    return ((resized[None] - mean) / std).astype(np.float32)


def model_input(grays: list[np.ndarray], manifest: dict[str, Any]) -> np.ndarray:
    """A batch of gray frames -> the exact array the model's input expects (layout, dtype, quantisation)."""
    spec = manifest["inputs"][0]
    batch = np.stack([normalized_chw(g, manifest["preprocessing"]) for g in grays])
    if spec["layout"] == "NHWC":
        batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
    q = spec.get("quantization")
    if spec["dtype"] in ("int8", "uint8"):
        if not q:
            from .manifest import BundleError

            raise BundleError(f"manifest.json: input {spec.get('name', '?')!r} is {spec['dtype']} but has no "
                              "quantization scale and zero_point, so frames cannot be fed to it; re-export the "
                              "bundle with pocus export")
        return quantize(batch, q["scale"], q["zero_point"], spec["dtype"])
    return batch.astype(spec["dtype"])
