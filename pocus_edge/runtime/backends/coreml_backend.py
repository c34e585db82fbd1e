"""Core ML backend: coremltools' MLModel, which can predict only on macOS.

The bundle's mlpackage takes a grayscale image (ImageType) of the manifest's size, so the array from
pre-processing (raw pixels, 1 channel) is rounded to 8 bits and passed as a PIL image, as an app would.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from . import BackendUnavailable

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class CoreMLBackend:
    """Predicts one image at a time through coremltools on macOS."""

    name = "coreml"
    fixed_batch = 1

    def __init__(self, model_path: Path, manifest: dict[str, Any], compute_units: str = "ALL"):
        if platform.system() != "Darwin":
            raise BackendUnavailable("Core ML predicts only on macOS; on this machine use the onnx or tflite bundle")
        try:
            import coremltools as ct
        except ImportError:
            raise BackendUnavailable("coremltools is not installed: pip install coremltools")
        if compute_units not in COMPUTE_UNITS:
            raise BackendUnavailable(f"compute_units {compute_units!r}: choose one of {', '.join(COMPUTE_UNITS)}")
        self.model = ct.models.MLModel(str(model_path), compute_units=getattr(ct.ComputeUnit, compute_units))
        self.input_name = manifest["inputs"][0]["name"]
        self.output_name = manifest["outputs"][0]["name"]
        self.labels = list(manifest["labels"])
        self.threads = None

    def run(self, x: np.ndarray) -> np.ndarray:
        from PIL import Image

        pixels = np.asarray(x[0, 0], dtype=np.uint8)
        value = self.model.predict({self.input_name: Image.fromarray(pixels, mode="L")})[self.output_name]
        if isinstance(value, dict):  # classifier probabilities come as {label: p}
            value = [value[label] for label in self.labels]
        array = np.asarray(value, dtype=np.float32)
        return array if array.ndim >= 2 else array[None]


def open(bundle_dir: Path, manifest: dict[str, Any], compute_units: str = "ALL", **_: Any) -> CoreMLBackend:
    """Open the bundle's .mlpackage."""
    return CoreMLBackend(bundle_dir / manifest["model_file"], manifest, compute_units)
