"""TensorRT target: a build kit, because an engine only runs on the GPU and TensorRT version that built it.

Writes `model.onnx` (fp32 graph for fp32/fp16, whose precision the builder flag sets; for int8, a QDQ graph
with symmetric int8 activations and per-channel int8 weights for TensorRT's explicit quantisation),
`build_engine.sh` (trtexec) and `build_engine.py` (the TensorRT Python builder, no torch needed), plus the
manifest. `--build-engine` builds `model.engine` now, and fails clearly without tensorrt and a GPU.
Parity here runs the kit's ONNX with ONNX Runtime on the CPU; the engine is checked on the device.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .base import ExportError, ExportRequest, TargetResult, require, version_of
from .onnx import export_float_onnx, input_shape, output_shape
from .targets import TARGETS

NAME = "tensorrt"
PRECISIONS = TARGETS[NAME].precisions  # options (--build-engine), defaults, parity backend: targets.py
EXTRA = "export"

TRTEXEC_FLAGS = {"fp32": "", "fp16": "--fp16", "int8": "--fp16 --int8"}


def check_available() -> None:
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module)


def preflight(options: dict[str, Any]) -> None:
    """Fail before any conversion work when --build-engine cannot succeed here."""
    if options.get("build_engine"):
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            raise ExportError("--build-engine needs the tensorrt package and an NVIDIA GPU on this machine; without "
                              "them, export the kit and run build_engine.sh on the target device")


def build_script(request: ExportRequest, shape: list[Any], float_layers: list[str] = ()) -> str:
    """A trtexec command line for the target device (optimization profile when the batch is dynamic). Layers kept
    in float by int8 mixed precision carry no Q/DQ, and are pinned to fp32 (TensorRT names layers after the ONNX
    nodes; build_engine.py does not pin them: there they run in fp16)."""
    _, c, h, w = shape
    profile = ""
    if float_layers:
        pinned = ",".join(f"{name}:fp32" for name in float_layers)
        profile += f" \\\n  --precisionConstraints=prefer --layerPrecisions={pinned}"
    if isinstance(shape[0], str):
        profile += (f" \\\n  --minShapes=image:1x{c}x{h}x{w} --optShapes=image:4x{c}x{h}x{w}"
                   f" --maxShapes=image:${{MAX_BATCH:-8}}x{c}x{h}x{w}")
    return f"""#!/usr/bin/env bash
# Build the TensorRT engine for THIS GPU and TensorRT version (engines are not portable).
# Usage: ./build_engine.sh            (needs trtexec on PATH, e.g. /usr/src/tensorrt/bin on JetPack)
# Or:    python3 build_engine.py .    (TensorRT Python API)
set -euo pipefail
cd "$(dirname "$0")"
trtexec --onnx=model.onnx --saveEngine=model.engine {TRTEXEC_FLAGS[request.precision]} \\
  --timingCacheFile=timing.cache --memPoolSize=workspace:4096M{profile}
echo "built $(pwd)/model.engine; run it with: python -c \\"import pocus_edge.runtime as r; print(r.load('.'))\\""
"""


def convert(request: ExportRequest, workdir: Path) -> TargetResult:
    """Write the build kit (and the engine with --build-engine)."""
    check_available()
    onnx_path = workdir / TARGETS[NAME].model_file
    options: dict[str, Any] = {"kind": "build kit", "builder_precision_flags": TRTEXEC_FLAGS[request.precision] or
                               "(none: fp32)", "dynamic_batch": request.dynamic_batch,
                               "parity_backend": TARGETS[NAME].parity_backend,
                               "parity_note": "kit ONNX run with ONNX Runtime on CPU; the engine is checked on the "
                                              "device with `pocus bench parity`"}
    if request.precision == "int8":
        from .quantize import quantize_onnx_static

        float_path = workdir / ".model-fp32.onnx"
        export_float_onnx(request, float_path)
        quant_options, extra = quantize_onnx_static(float_path, onnx_path, request, symmetric_activations=True)
        options.update(quant_options)
        float_path.unlink()
    else:
        export_float_onnx(request, onnx_path)
        extra = []
    shape = input_shape(request)
    script = workdir / "build_engine.sh"
    script.write_text(build_script(request, shape, options.get("float_layers", [])))
    script.chmod(0o755)
    shutil.copyfile(Path(__file__).parents[1] / "runtime" / "backends" / "trt_build.py", workdir / "build_engine.py")
    extra += ["build_engine.sh", "build_engine.py"]
    if request.options.get("build_engine"):
        extra.append(_build_now(workdir, request, shape))
        options["engine"] = {"tensorrt": version_of("tensorrt")}
    return TargetResult(
        model_file=onnx_path.name,
        inputs=[{"name": "image", "shape": shape, "dtype": "float32", "layout": "NCHW",
                 "channels": 1 if request.raw_input else 3}],
        outputs=[{"name": request.output_meaning, "shape": output_shape(request, onnx_path), "dtype": "float32",
                  "layout": "NCHW" if request.spec.task == "segmentation" else "NC",
                  "meaning": request.output_meaning}],
        extra_files=extra, target_options=options,
        tool_versions={k: version_of(k) for k in ("onnx", "onnxruntime", "tensorrt")})


def _build_now(workdir: Path, request: ExportRequest, shape: list[Any]) -> str:
    preflight({"build_engine": True})
    from ..runtime.backends.trt_build import build_engine

    try:
        build_engine(workdir / "model.onnx", workdir / "model.engine", request.precision, "image", shape,
                     timing_cache=workdir / "timing.cache")
    except RuntimeError as exc:
        raise ExportError(f"TensorRT engine build failed: {exc}")
    return "model.engine"
