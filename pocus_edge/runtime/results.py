"""Typed results a Predictor returns, and the post-processing that makes them from raw model outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PocusError
from .measure import measure_mask
from .postprocess import classify, segment
from .preprocess import dequantize


class NonFiniteOutputError(PocusError):
    """A model output holds NaN or infinite values: any mask, label or embedding made from it would be wrong."""

    def __init__(self, what: str, detail: str):
        super().__init__(f"{what} {detail}")
        self.detail = detail


def check_finite(output: np.ndarray, what: str = "model output") -> None:
    """Raise NonFiniteOutputError (naming counts of NaN and inf) unless every value of `output` is finite."""
    finite = np.isfinite(output)
    if finite.all():
        return
    nan = int(np.isnan(output).sum())
    inf = int(finite.size - finite.sum()) - nan
    kinds = " and ".join(k for k, n in (("NaN", nan), ("inf", inf)) if n)
    counts = ", ".join(f"{n} {k}" for k, n in (("NaN", nan), ("inf", inf)) if n)
    raise NonFiniteOutputError(what, (
        f"holds {kinds} ({counts} of {output.size} values); no result was made from it. The model or bundle is "
        "broken (NaN weights, an overflowing fp16/int8 conversion): re-export it and check its parity"))


@dataclass
class SegmentationResult:
    """mask: uint8 H x W at the original image size (class index; 0/1 for binary); probabilities: K x H x W
    (K = 1 for a binary model: the foreground probability). `measure`: the measurements the bundle supports
    (manifest `measurements`); `pixel_spacing_mm`: (row, col) mm per pixel of the original image, or None."""

    mask: np.ndarray
    probabilities: np.ndarray
    labels: list[str]
    latency_ms: float | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    measure: tuple[str, ...] = ()
    smoke_test_only: bool = False  # the manifest says the model descends from random weights: meaningless output

    @property
    def measurements(self) -> dict[str, Any] | None:
        """Area / ellipse of the current mask (original size; in mm when the spacing is known, else px), computed
        on each access so a changed mask (cine smoothing) is never measured stale; None if the bundle lists none.
        A binary model: one structure; a multi-class model: one entry per foreground label under `per_label`."""
        if not self.measure:
            return None
        if self.probabilities.shape[0] == 1:
            return measure_mask(self.mask, self.pixel_spacing_mm, self.measure)
        return {"per_label": {label: measure_mask(self.mask == k, self.pixel_spacing_mm, self.measure)
                              for k, label in enumerate(self.labels) if k > 0}}

    def overlay(self, image: np.ndarray, color: tuple[int, int, int] = (255, 64, 64),
                alpha: float = 0.45) -> np.ndarray:
        """RGB uint8 of the gray image (H x W, uint8 or [0,1] float) with the mask tinted over it."""
        gray = image if image.dtype == np.uint8 else np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        if gray.shape != self.mask.shape:
            from .images import InputError

            raise InputError(f"overlay: the image is {gray.shape[0]}x{gray.shape[1]} but the mask is "
                             f"{self.mask.shape[0]}x{self.mask.shape[1]}; pass the frame this result was predicted "
                             "on (masks come back at the input's size)")
        rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
        on = self.mask > 0
        rgb[on] = (1 - alpha) * rgb[on] + alpha * np.asarray(color, dtype=np.float32)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def to_json(self) -> dict[str, Any]:
        """Summary that fits in a JSON report (no pixel arrays)."""
        return {"task": "segmentation", "mask_shape": list(self.mask.shape),
                "foreground_fraction": float((self.mask > 0).mean()), "labels": self.labels,
                "measurements": self.measurements, "latency_ms": self.latency_ms,
                "smoke_test_only": self.smoke_test_only}


@dataclass
class ClassificationResult:
    """label: the top class; probabilities: {label: probability} for every class."""

    label: str
    probabilities: dict[str, float]
    latency_ms: float | None = None
    smoke_test_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"task": "classification", "label": self.label, "probabilities": self.probabilities,
                "latency_ms": self.latency_ms, "smoke_test_only": self.smoke_test_only}


@dataclass
class EmbeddingResult:
    """vector: the L2-normalised embedding (float32)."""

    vector: np.ndarray
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    smoke_test_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"task": "embedding", "dim": int(self.vector.shape[0]), "norm": float(np.linalg.norm(self.vector)),
                "vector": [float(v) for v in self.vector], "latency_ms": self.latency_ms,
                "smoke_test_only": self.smoke_test_only}


def output_as_float(raw: np.ndarray, manifest: dict[str, Any]) -> np.ndarray:
    """Dequantise an integer output and bring channels first (N x C x H x W or N x C)."""
    spec = manifest["outputs"][0]
    out = raw
    q = spec.get("quantization")
    if out.dtype in (np.int8, np.uint8):
        if not q:
            from .manifest import BundleError

            raise BundleError(f"manifest.json: output {spec.get('name', '?')!r} is {out.dtype} but has no "
                              "quantization scale and zero_point, so it cannot be read as probabilities; re-export "
                              "the bundle with pocus export")
        out = dequantize(out, q["scale"], q["zero_point"])
    out = out.astype(np.float32)
    if out.ndim == 4 and spec.get("layout") == "NHWC":
        out = out.transpose(0, 3, 1, 2)
    return out


def postprocess(output: np.ndarray, manifest: dict[str, Any], original_size: tuple[int, int],
                pixel_spacing_mm: tuple[float, float] | None = None):
    """One sample's float output (C x H x W or C) -> a typed result at the original image size (a segmentation
    result measures what the manifest's `measurements` lists, in mm with `pixel_spacing_mm`).

    Non-finite outputs raise NonFiniteOutputError: thresholding NaN would give an empty mask, silently."""
    check_finite(output)
    smoke = bool(manifest.get("smoke_test_only", False))
    post = manifest["postprocessing"]
    task = manifest["task"]
    labels = list(manifest["labels"])
    if task == "segmentation":
        probs, mask = segment(output, post, original_size)
        return SegmentationResult(mask=mask, probabilities=probs, labels=labels, pixel_spacing_mm=pixel_spacing_mm,
                                  measure=tuple(manifest.get("measurements", ())), smoke_test_only=smoke)
    if task == "classification":
        probs = classify(output, post)
        top = int(np.argmax(probs))
        by_label = {k: float(p) for k, p in zip(labels, probs, strict=True)}
        return ClassificationResult(label=labels[top], probabilities=by_label, smoke_test_only=smoke)
    vector = output.astype(np.float32).reshape(-1)
    if post["activation"] == "l2_normalize":
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return EmbeddingResult(vector=vector, smoke_test_only=smoke)
