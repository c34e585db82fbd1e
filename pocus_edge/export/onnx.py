"""ONNX target: `model.onnx` through torch.onnx.export(dynamo=True), opset 18, slimmed and checked.

Precisions: fp32; fp16 (onnxruntime's float16 converter, float32 I/O kept); int8 (static QDQ, per-channel
int8 weights, uint8 activations, calibrated on real images, with automatic mixed precision and an optional
per-layer sensitivity report: see quantize.py). Optional `.ort` file for
ONNX Runtime Mobile (`--ort-format`). Runs everywhere ONNX Runtime does, so parity always runs here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .base import ExportError, ExportRequest, TargetResult, require, version_of
from .targets import TARGETS

NAME = "onnx"
PRECISIONS = TARGETS[NAME].precisions  # options, defaults and parity backend: the table in targets.py
EXTRA = "export"
OPSET = 18
log = logging.getLogger(__name__)


def check_available() -> None:
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module)


def input_shape(request: ExportRequest) -> list[Any]:
    channels = 1 if request.raw_input else 3
    return ["batch" if request.dynamic_batch else 1, channels, request.image_size, request.image_size]


def export_float_onnx(request: ExportRequest, path: Path) -> None:
    """torch -> fp32 ONNX (dynamo exporter), slimmed, checked."""
    onnx = require("onnx")
    channels = 1 if request.raw_input else 3
    example = torch.rand(2 if request.dynamic_batch else 1, channels, request.image_size, request.image_size)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=256)},) if request.dynamic_batch else None
    try:
        program = torch.onnx.export(request.model, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                                    output_names=[request.output_meaning], dynamic_shapes=dynamic, verbose=False)
        program.save(str(path))
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {request.spec.name}: {type(exc).__name__}: {exc}")
    model = onnx.load(str(path))
    scopes = _conv_not_norm(model, _module_scopes(model), getattr(program, "exported_program", None))
    try:
        import onnxslim

        model = onnxslim.slim(model)
    except ImportError:
        log.warning("onnxslim not installed; the ONNX graph is not simplified")
    _set_module_scopes(model, scopes)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _module_scopes(model) -> dict[str, str]:
    """{node name: PyTorch module path} from the dynamo exporter's metadata (onnxslim drops it)."""
    import ast

    scopes = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    path = ast.literal_eval(prop.value)
                except (ValueError, SyntaxError):
                    continue
                modules = [p for p in path[:-1] if p]  # the last entry is the op itself
                if modules:
                    scopes[node.name] = modules[-1]
    return scopes


def _conv_not_norm(model, scopes: dict[str, str], exported) -> dict[str, str]:
    """The exporter fuses convolution + BatchNorm into one Conv carrying the BatchNorm's scope: name that Conv by the
    convolution's module path (the layer a user knows; the int8 report and --float-layers use it)."""
    if exported is None:
        return scopes

    def path(node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        return list(stack.values())[-1][0] if stack else ""

    norms = {path(n): path(n.args[0]) for n in exported.graph.nodes if n.op == "call_function"
             and "batch_norm" in str(n.target) and n.args and "conv" in str(getattr(n.args[0], "target", ""))}
    convs = {n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    return {k: norms.get(v) or v if k in convs else v for k, v in scopes.items()}


def _set_module_scopes(model, scopes: dict[str, str]) -> None:
    """Keep the module path as node metadata (`pocus.module`): the int8 report and float layers name it."""
    from .quantize_graph import MODULE_KEY

    for node in model.graph.node:
        if node.name in scopes:
            node.metadata_props.add(key=MODULE_KEY, value=scopes[node.name])


def to_fp16(src: Path, dst: Path) -> None:
    """fp32 ONNX -> fp16 weights and compute with float32 inputs/outputs (onnxruntime's converter)."""
    onnx = require("onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    wrapped = OnnxModel(model)
    wrapped.topological_sort()  # the converter appends the input casts last; the checker wants graph order
    onnx.save(wrapped.model, str(dst))
    onnx.checker.check_model(str(dst))


def output_shape(request: ExportRequest, model_path: Path) -> list[Any]:
    onnx = require("onnx")
    dims = onnx.load(str(model_path), load_external_data=False).graph.output[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def convert(request: ExportRequest, workdir: Path) -> TargetResult:
    """Write model.onnx (and model.ort when asked) in the precision requested."""
    check_available()
    final = workdir / TARGETS[NAME].model_file
    fp32 = final if request.precision == "fp32" else workdir / ".model-fp32.onnx"
    export_float_onnx(request, fp32)
    options: dict[str, Any] = {"opset": OPSET, "dynamic_batch": request.dynamic_batch}
    extra: list[str] = []
    if request.precision == "fp16":
        to_fp16(fp32, final)
    elif request.precision == "int8":
        from .quantize import quantize_onnx_static

        quant_options, extra = quantize_onnx_static(fp32, final, request, symmetric_activations=False)
        options.update(quant_options)
    if fp32 != final:
        fp32.unlink()
    if request.options.get("ort_format"):
        extra.append(_to_ort_format(final, workdir))
    return TargetResult(
        model_file=final.name,
        inputs=[{"name": "image", "shape": input_shape(request), "dtype": "float32", "layout": "NCHW",
                 "channels": 1 if request.raw_input else 3}],
        outputs=[{"name": request.output_meaning, "shape": output_shape(request, final), "dtype": "float32",
                  "layout": "NCHW" if request.spec.task == "segmentation" else "NC",
                  "meaning": request.output_meaning}],
        extra_files=extra,
        target_options=options,
        tool_versions={k: version_of(k) for k in ("onnx", "onnxruntime", "onnxscript", "onnxslim")},
    )


def _to_ort_format(model: Path, workdir: Path) -> str:
    """Convert to ONNX Runtime's .ort flatbuffer for the mobile/minimal builds."""
    import onnxruntime as ort

    out = workdir / "model.ort"
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(out)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    return out.name
