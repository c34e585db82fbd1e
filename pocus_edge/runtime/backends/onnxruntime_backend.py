"""ONNX Runtime backend: CPU by default; CUDA, TensorRT, CoreML or NNAPI execution providers when asked and present."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import BackendUnavailable

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
}


ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8"}


class OnnxRuntimeBackend:
    """An InferenceSession over the bundle's .onnx (or .ort) file with an explicit thread count."""

    name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int | None, providers: list[str] | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("onnxruntime is not installed: pip install 'pocus-edge[runtime]'")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.log_severity_level = 3
        wanted = [PROVIDER_NAMES.get(p.lower(), p) for p in (providers or ["cpu"])]
        available = set(ort.get_available_providers())
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendUnavailable(
                f"onnxruntime here has no {', '.join(missing)} (available: {', '.join(sorted(available))})"
            )
        if "CPUExecutionProvider" not in wanted:
            wanted.append("CPUExecutionProvider")
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=wanted)
        self.input_name = self.session.get_inputs()[0].name
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        self.threads = threads

    def input_spec(self) -> tuple[list[int | None], str]:
        """The model's own input shape (None where dynamic) and numpy dtype name, to check against the manifest."""
        spec = self.session.get_inputs()[0]
        dtype = ONNX_DTYPES.get(spec.type, spec.type)
        return [d if isinstance(d, int) else None for d in spec.shape], dtype

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def open(bundle_dir: Path, manifest: dict[str, Any], threads: int | None = None,
         providers: list[str] | None = None, **_: Any) -> OnnxRuntimeBackend:
    """Open the bundle's ONNX model (a TensorRT build kit's ONNX too, as a CPU reference)."""
    return OnnxRuntimeBackend(bundle_dir / manifest["model_file"], threads, providers)
