"""TFLite (LiteRT) target: `model.tflite` through litert-torch, no TensorFlow.

Precisions: fp32; fp16 (weights stored as float16 by ai-edge-quantizer's float casting, compute in float32);
int8, full integer, per-channel symmetric weights, calibrated on real frames, with a choice of I/O type:
- `io="int8"` (default): PT2E static quantisation in PyTorch. litert-torch lowers the PT2E input/output
  quantisation into the tensors themselves, so input and output are int8; their scale/zero-point go into the
  manifest and the runtime (and the Android core) quantise/dequantise with them. Mixed precision as for ONNX
  (--accuracy-target, --float-layers, --max-float-layers, --explain): layers are module paths kept in float
  by the quantiser's annotation (tflite_mixed.py).
- `io="float"`: the fp32 TFLite model quantised by ai-edge-quantizer's static int8 recipe (min-max, int8
  asymmetric activations) with the graph input and output left unquantised, so the model takes and returns
  float32 and quantises/dequantises inside, for apps that feed floats.
`--nhwc` gives channels-last I/O as mobile apps feed.
Parity runs here with the ai-edge-litert interpreter.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, PocusError
from .base import ExportError, ExportRequest, TargetResult, require, version_of
from .targets import TARGETS

NAME = "tflite"
PRECISIONS = TARGETS[NAME].precisions  # options (--nhwc, --io), defaults, parity backend: targets.py
EXTRA = "export"
log = logging.getLogger(__name__)


def check_available() -> None:
    require("litert_torch")
    require("ai_edge_litert")


@contextmanager
def hidden_library_stdout(hide: bool = True):
    """litert-torch prints progress lines and its PT2E annotators print notices ("Relu partition has more than one
    output node") to stdout, natively and with print(); keep both out of a command's output (stdout carries its
    results). `hide=False` (--verbose) lets them through."""
    import contextlib
    import sys

    if not hide:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    root = logging.getLogger()
    root.addFilter(_ours_only)  # litert-torch logs "Use JAX lowering: ..." through the root logger (logging.info)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        root.removeFilter(_ours_only)
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _ours_only(record: logging.LogRecord) -> bool:
    """Root-logger records from our own code only (other libraries' named loggers are quieted in chatter.py)."""
    return f"{os.sep}pocus_edge{os.sep}" in record.pathname


def channels_last_output(request: ExportRequest) -> bool:
    """Whether the .tflite's output is NHWC: with --nhwc, a segmentation map is (a class vector has no layout)."""
    return bool(request.options.get("nhwc")) and request.spec.task == "segmentation"


def _layout_wrapped(request: ExportRequest) -> torch.nn.Module:
    import litert_torch

    if not request.options.get("nhwc"):
        return request.model
    outputs = [0] if channels_last_output(request) else []
    return litert_torch.to_channel_last_io(request.model, args=[0], outputs=outputs).eval()


def _example(request: ExportRequest) -> torch.Tensor:
    channels = 1 if request.raw_input else 3
    s = request.image_size
    return torch.zeros(1, s, s, channels) if request.options.get("nhwc") else torch.zeros(1, channels, s, s)


# aten ops annotated here by their target. litert-torch's PT2EQuantizer finds add and cat through the
# `source_fn_stack` node metadata, which only strict (dynamo) export records; torch.export's default non-strict
# trace leaves residual adds and U-Net skip concatenations unannotated. The TFLite converter then pushes the
# neighbours' quantisation parameters through those float ops and can give a tfl.pad (a padded convolution
# reading the same tensor) two different scales: "'tfl.pad' op quantization parameters violate the same scale
# constraint" (MobileNetV3-S U-Net). ELEMENTWISE: int8 in and out, own output range. ACTIVATIONS: the same, for
# activations TFLite and XNNPACK run in int8 (HARD_SWISH; SiLU and hard-sigmoid lower to several ops).
ELEMENTWISE = ("add.Tensor", "add_.Tensor", "mul.Tensor", "mul_.Tensor")
ACTIVATIONS = ("hardswish.default", "hardswish_.default")


def _float_node(node) -> bool:
    value = node.meta.get("val")
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _annotate_by_target(model: torch.fx.GraphModule, config, targets: tuple[str, ...], keep=None) -> None:
    """Annotate, in place, the float-valued `targets` and aten.cat nodes the pattern matchers left unannotated
    (only nodes `keep` accepts, when given)."""
    from litert_torch.quantize import pt2e_quantizer_utils as qu
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    wanted = {getattr(getattr(torch.ops.aten, op), overload) for op, overload in (t.split(".") for t in targets)}
    for node in model.graph.nodes:
        if node.op != "call_function" or qu._is_annotated([node]) or not _float_node(node):  # noqa: SLF001
            continue
        if keep is not None and not keep(node):
            continue
        if node.target == torch.ops.aten.cat.default:
            inputs = [a for a in node.args[0] if isinstance(a, torch.fx.Node)]
            shared = SharedQuantizationSpec((inputs[0], node))
            qmap = {a: (qu.get_input_act_qspec(config) if i == 0 else shared) for i, a in enumerate(inputs)}
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qmap, output_qspec=shared, _annotated=True)
        elif node.target in wanted:
            qmap = {a: qu.get_input_act_qspec(config) for a in node.args[:2]
                    if isinstance(a, torch.fx.Node) and _float_node(a)}
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qmap, output_qspec=qu.get_output_act_qspec(config), _annotated=True)


def int8_quantizer(targets: tuple[str, ...] = ELEMENTWISE + ACTIVATIONS, float_layers: list[str] | tuple = (),
                   only: list[str] | None = None):
    """litert-torch's PT2E quantizer (int8 symmetric, per-channel weights) that also annotates `targets` and
    aten.cat by target (see ELEMENTWISE), then re-runs its fixed-range (sigmoid) and shared-range (mean, view,
    ...) propagation so ops after the newly quantised tensors follow. Nodes inside the modules `float_layers`
    stay float (mixed precision); with `only`, everything outside those modules does (the sensitivity report).
    litert-torch's own set_module_name filter cannot do it: it parses strict-export stack keys."""
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize import pt2e_quantizer_utils as qu

    from .tflite_mixed import node_filter, read_in_float

    keep = node_filter(float_layers, only)

    class Int8Quantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if keep is None:
                super().annotate(model)
            else:  # the global pass of litert-torch 0.10's annotate, with our filter
                self._annotate_all_static_patterns(model, self.global_config, keep)
                qu.propagate_annotation(model)
            _annotate_by_target(model, self.global_config, targets, keep)
            qu.OP_TO_ANNOTATOR["fixed_qparams"](model, self.global_config, keep)
            qu.propagate_annotation(model)
            self.float_producers = read_in_float(model, float_layers)
            return model

    return Int8Quantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))


def _convert_int8(module: torch.nn.Module, request: ExportRequest, path: Path) -> tuple[dict[str, Any], list[str]]:
    """PT2E int8 with mixed precision (tflite_mixed.py, quantize_mixed.py): writes `path`; returns
    (target_options, extra bundle files)."""
    import shutil
    import tempfile

    from .quantize import _inputs, _settings, _thresholds, calibration_batches, search_frames
    from .quantize_mixed import check_names, choose
    from .tflite_mixed import METHOD, TfliteInt8Job

    def layout(frames) -> list[np.ndarray]:
        nhwc = request.options.get("nhwc")
        return [np.ascontiguousarray(b.transpose(0, 2, 3, 1)) if nhwc else b for b in frames]

    settings = _settings(request)
    scratch = Path(tempfile.mkdtemp(prefix=".int8-", dir=path.parent))
    try:
        search = layout(search_frames(list(_inputs(request, "parity"))))
        job = TfliteInt8Job(module, _example(request), request, _thresholds(request, settings["target"]), scratch,
                            layout(calibration_batches(request)), search)
        if settings["forced"]:
            check_names(job, settings["forced"])
        job.progress.stage(f"calibrate on {len(job.calibration)} frames", len(job.calibration))
        job.full(METHOD)  # the one calibration every candidate shares
        variant, options, extra = choose(job, METHOD, settings, path.parent)
        job.progress.stage("convert the int8 model to .tflite")
        job.write(variant, path)
        producers = [m for m in getattr(variant.quantizer, "float_producers", []) if m not in variant.floats]
        if producers:  # they write the float tensors the float layers read (tflite_mixed.read_in_float)
            options["mixed_precision"]["float_compute_also"] = producers
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return options, extra


def preflight(options: dict[str, Any]) -> None:
    """--io float quantises with ai-edge-quantizer, which keeps no layer in float here: refuse the float-layer
    options there, and turn the default automatic search off (the manifest says so)."""
    if options.get("io") != "float" or "mixed_precision" not in options:
        return
    asked = [f"--{k.replace('_', '-')}" for k in ("float_layers", "accuracy_target", "max_float_layers", "explain")
             if options.get(k) not in (None, False)]
    if asked:
        raise ConfigError(f"{', '.join(asked)}: tflite int8 keeps layers in float only with --io int8 (the PT2E "
                          "path); --io float (ai-edge-quantizer) quantises the whole graph. Drop them or use --io int8")
    options["mixed_precision"] = False


def quantize_int8_float_io(src: Path, dst: Path, batches: list[np.ndarray]) -> None:
    """fp32 .tflite -> full-integer .tflite whose graph input and output stay float32, calibrated on `batches`
    (model inputs in the fp32 model's layout)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager

    signatures = Interpreter(model_path=str(src)).get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    recipe = recipe_manager.RecipeManager()
    recipe.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                             activation_num_bits=8, weight_num_bits=8)
    for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        recipe.add_quantization_config(regex=".*", operation_name=boundary,
                                       algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    q = quantizer.Quantizer(str(src))
    q.load_quantization_recipe(recipe.get_quantization_recipe())
    calibration = q.calibrate({key: [{input_name: b} for b in batches]}, num_threads=max(1, os.cpu_count() or 1))
    q.quantize(calibration).export_model(str(dst), overwrite=True)


def _to_int8_float_io(src: Path, dst: Path, request: ExportRequest) -> None:
    from .progress import progress_of
    from .quantize import calibration_batches

    batches = calibration_batches(request)
    progress_of(request).stage(f"calibrate on {len(batches)} frames + quantise (ai-edge-quantizer)")
    if request.options.get("nhwc"):
        batches = [np.ascontiguousarray(b.transpose(0, 2, 3, 1)) for b in batches]
    quantize_int8_float_io(src, dst, batches)


def _to_fp16_weights(src: Path, dst: Path) -> None:
    from ai_edge_quantizer import algorithm_manager, quantizer

    q = quantizer.Quantizer(str(src))
    q.add_weight_only_config(regex=".*", operation_name="*", num_bits=16,
                             algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    q.quantize().export_model(str(dst), overwrite=True)


def _io_details(path: Path) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


def _spec(detail: dict) -> dict[str, Any]:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero = detail["quantization"]
    spec: dict[str, Any] = {"name": detail["name"], "shape": [int(d) for d in detail["shape"]], "dtype": dtype}
    if dtype in ("int8", "uint8"):
        spec["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
    return spec


def convert(request: ExportRequest, workdir: Path) -> TargetResult:
    """Write model.tflite in the precision requested."""
    check_available()
    import litert_torch

    final = workdir / TARGETS[NAME].model_file
    io = request.options.get("io", "float")  # the table offers --io for int8 only; float models have float I/O
    module = _layout_wrapped(request)
    mixed_options: dict[str, Any] = {}
    extra: list[str] = []
    try:
        with hidden_library_stdout():
            if request.precision == "int8" and io == "int8":
                mixed_options, extra = _convert_int8(module, request, final)
            else:
                float_path = final if request.precision == "fp32" else workdir / ".model-fp32.tflite"
                litert_torch.convert(module, (_example(request),)).export(str(float_path))
                if request.precision == "fp16":
                    _to_fp16_weights(float_path, final)
                elif request.precision == "int8":
                    _to_int8_float_io(float_path, final, request)
                if float_path != final:
                    float_path.unlink()
    except PocusError:
        raise
    except Exception as exc:
        raise ExportError(f"litert-torch could not convert {request.spec.name} ({request.precision}): "
                          f"{type(exc).__name__}: {str(exc)[:300]}")
    inp, out = _io_details(final)
    layout = "NHWC" if request.options.get("nhwc") else "NCHW"
    input_spec = {**_spec(inp), "layout": layout, "channels": 1 if request.raw_input else 3}
    output_spec = {**_spec(out), "meaning": request.output_meaning,
                   "layout": layout if request.spec.task == "segmentation" else "NC"}
    options: dict[str, Any] = {"layout": layout, "io": "int8" if io == "int8" else "float32"}
    if request.precision == "int8":
        quantization = ("PT2E static, full integer" if io == "int8" else
                        "ai-edge-quantizer static min-max, full integer inside, float32 graph input/output")
        options.update({"quantization": quantization, "weights": "int8 symmetric per-channel",
                        "activations": "int8", "calibration_images": len(request.calibration.images),
                        "calibration_source": request.calibration.origin})
        options.update(mixed_options or {"mixed_precision": {"mode": "off: --io float (ai-edge-quantizer) keeps no "
                                                                      "layer in float here"}})
    elif request.precision == "fp16":
        options["weights"] = "float16 (compute float32)"
    return TargetResult(model_file=final.name, inputs=[input_spec], outputs=[output_spec], target_options=options,
                        extra_files=extra,
                        tool_versions={k: version_of(k) for k in ("litert-torch", "ai-edge-litert",
                                                                   "ai-edge-quantizer")})
