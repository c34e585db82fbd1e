"""TensorRT backend: runs `model.engine`, or builds one from a build kit's ONNX on first load and caches it.

The cache key is the GPU name, the TensorRT version, the precision and the ONNX's sha256, because an
engine is only valid for the GPU and TensorRT version that built it. Device memory goes through
cuda-python (`cuda.bindings`), so this backend needs no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PocusError
from . import BackendUnavailable

RETRY = ("check the GPU with nvidia-smi (free memory, driver), or run the bundle's ONNX on CPU with "
         "backend='onnxruntime'")

CACHE_DIR = Path(os.environ.get("POCUS_TRT_CACHE", Path.home() / ".cache" / "pocus-edge" / "engines"))


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable("TensorRT backend needs cuda-python: pip install cuda-python")
    return cudart


class TensorRTError(PocusError):
    """The GPU or TensorRT failed while loading or running a bundle; the message says which call and what to do."""


def _check(result, call: str):
    """The value of a cuda-python call (its error code first); TensorRTError naming the call when it failed."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TensorRTError(f"TensorRT backend: CUDA call {call} failed ({err}); {RETRY}")
    return rest[0] if len(rest) == 1 else rest


def _engine_path(bundle_dir: Path, manifest: dict[str, Any], trt, cudart) -> Path:
    shipped = bundle_dir / "model.engine"
    if shipped.is_file() and "model.engine" in manifest["files"]:
        return shipped
    props = _check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    gpu = props.name.decode(errors="replace").strip().replace(" ", "_")
    onnx_hash = manifest["files"][manifest["model_file"]][:16]
    key = f"{manifest['name']}-{manifest['precision']}-{gpu}-trt{trt.__version__}-{onnx_hash}"
    path = CACHE_DIR / f"{key}.engine"
    if not path.is_file():
        from .trt_build import build_engine

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        spec = manifest["inputs"][0]
        build_engine(bundle_dir / manifest["model_file"], path, manifest["precision"], spec["name"], spec["shape"],
                     timing_cache=CACHE_DIR / f"timing-{gpu}-trt{trt.__version__}.cache")
    return path


class TensorRTBackend:
    """One execution context; synchronous host<->device copies around execute_async_v3."""

    name = "tensorrt"

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any]):
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable("TensorRT is not installed (GPU hosts only): pip install 'pocus-edge[tensorrt]', "
                                     "or run the kit's ONNX on CPU with backend='onnxruntime'")
        self.cudart = _cudart()
        if _check(self.cudart.cudaGetDeviceCount(), "cudaGetDeviceCount") < 1:
            raise BackendUnavailable("TensorRT needs a CUDA GPU; none is visible")
        logger = trt.Logger(trt.Logger.WARNING)
        engine_bytes = _engine_path(bundle_dir, manifest, trt, self.cudart).read_bytes()
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendUnavailable("the engine does not load on this GPU/TensorRT; delete the cache and rebuild")
        self.context = self.engine.create_execution_context()
        self.input_name = manifest["inputs"][0]["name"]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        batch = manifest["inputs"][0]["shape"][0]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.threads = None

    def run(self, x: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.context.set_input_shape(self.input_name, x.shape)
        out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=np.float32)
        d_in = _check(cudart.cudaMalloc(x.nbytes), "cudaMalloc")
        d_out = _check(cudart.cudaMalloc(out.nbytes), "cudaMalloc")
        try:
            kind = cudart.cudaMemcpyKind
            _check(cudart.cudaMemcpy(d_in, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice), "cudaMemcpy (to GPU)")
            self.context.set_tensor_address(self.input_name, int(d_in))
            self.context.set_tensor_address(self.output_name, int(d_out))
            if not self.context.execute_async_v3(self.stream):
                raise TensorRTError(f"TensorRT backend: the engine failed to run an input of shape {x.shape}; "
                                    f"delete the cached engines in {CACHE_DIR} to rebuild them, or {RETRY}")
            _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            _check(cudart.cudaMemcpy(out.ctypes.data, d_out, out.nbytes, kind.cudaMemcpyDeviceToHost),
                   "cudaMemcpy (from GPU)")
        finally:
            cudart.cudaFree(d_in)
            cudart.cudaFree(d_out)
        return out


def open(bundle_dir: Path, manifest: dict[str, Any], **_: Any) -> TensorRTBackend:
    """Open (building and caching if needed) the engine for this bundle."""
    return TensorRTBackend(bundle_dir, manifest)
