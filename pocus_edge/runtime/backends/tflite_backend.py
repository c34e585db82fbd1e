"""TFLite/LiteRT backend: ai-edge-litert's interpreter, or tflite-runtime's, whichever is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import BackendUnavailable


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        raise BackendUnavailable("no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)")


class TfliteBackend:
    """One interpreter with a fixed input shape; `num_threads` goes to XNNPACK."""

    name = "tflite"

    def __init__(self, model_path: Path, threads: int | None):
        interpreter_cls = _interpreter_class()
        self.interpreter = interpreter_cls(model_path=str(model_path), num_threads=int(threads) if threads else None)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.fixed_batch = int(self.input["shape"][0])
        self.threads = threads

    def quantization(self) -> dict[str, Any]:
        """The model's own input/output (scale, zero_point), for checking against the manifest."""
        return {"input": self.input["quantization"], "output": self.output["quantization"]}

    def input_spec(self) -> tuple[list[int | None], str]:
        """The model's own input shape and numpy dtype name, to check against the manifest."""
        return [int(d) for d in self.input["shape"]], np.dtype(self.input["dtype"]).name

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != self.input["dtype"]:
            from ..images import InputError

            raise InputError(f"model.tflite takes {np.dtype(self.input['dtype']).name} input, got {x.dtype}: pass "
                             "the array Predictor.preprocess makes (it follows the manifest), not raw pixels")
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


def open(bundle_dir: Path, manifest: dict[str, Any], threads: int | None = None, **_: Any) -> TfliteBackend:
    """Open the bundle's .tflite file."""
    return TfliteBackend(bundle_dir / manifest["model_file"], threads)
