"""Inference engines behind one small interface: `Backend(bundle_dir, manifest, threads, **options).run(x)`.

BACKENDS maps a name to its module; the manifest's target picks the default one. Each module imports
its engine lazily and raises BackendUnavailable (naming the package to install) when it is missing.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...errors import PocusError


class BackendUnavailable(PocusError):
    """The engine a bundle needs is not installed or cannot run on this platform."""


class Backend(Protocol):
    name: str
    fixed_batch: int | None  # None: any batch size in one call

    def run(self, x: np.ndarray) -> np.ndarray: ...


BACKENDS = {
    "onnxruntime": "onnxruntime_backend",
    "tflite": "tflite_backend",
    "coreml": "coreml_backend",
    "tensorrt": "tensorrt_backend",
}
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "litert": "tflite", "trt": "tensorrt", "mlpackage": "coreml"}
DEFAULT_FOR_TARGET = {"onnx": "onnxruntime", "tflite": "tflite", "coreml": "coreml", "tensorrt": "tensorrt"}
COMPATIBLE = {"onnx": {"onnxruntime"}, "tflite": {"tflite"}, "coreml": {"coreml"},
              "tensorrt": {"tensorrt", "onnxruntime"}}


def open_backend(name: str | None, bundle_dir: Path, manifest: dict[str, Any], **options: Any) -> Backend:
    """Instantiate the named backend (or the target's default) after checking it can run this bundle."""
    target = manifest["target"]
    chosen = ALIASES.get(name, name) if name else DEFAULT_FOR_TARGET[target]
    if chosen not in BACKENDS:
        raise PocusError(f"backend {name!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if chosen not in COMPATIBLE[target]:
        raise PocusError(
            f"backend {chosen} cannot run a {target} bundle; use {', '.join(sorted(COMPATIBLE[target]))}"
        )
    module = importlib.import_module(f"{__name__}.{BACKENDS[chosen]}")
    return module.open(Path(bundle_dir), manifest, **options)
