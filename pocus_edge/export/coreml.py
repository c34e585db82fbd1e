"""Core ML target: `model.mlpackage` (ML program) for iOS 16+/macOS 13+.

The input is a grayscale `ImageType` of the export size with scale 1 and bias 0: the app hands Core ML
the 8-bit ultrasound frame as is, and the gray->RGB replication and mean/std normalisation are folded
exactly into the first convolution (see wrappers.fold_raw_input). Precisions: fp32 and fp16 compute
(`--compute-precision`, fp16 by default for fp16 bundles), int8 = linear symmetric weight quantisation;
`--palettize {4,6,8}` adds k-means weight palettisation.
int8 with `--activations int8` (W8A8, iOS 17+): activations are quantised too (int8 symmetric per tensor), their
ranges calibrated (min/max) on the `--calib-data` frames, on top of int8 symmetric per-channel weights.
coremltools' Core ML-side `optimize.coreml.experimental.linear_quantize_activations` calibrates by running the
model (`predict`, macOS only), so the ranges are calibrated in PyTorch with coremltools'
`optimize.torch.quantization.LinearQuantizer` (observers on, fake quantisation off, BatchNorm frozen: a pure
calibration pass, no training) and its finalized graph converts to MIL quantize/dequantize ops and
constexpr int8 weights; the saved spec is checked for them. The PyTorch W8A8 graph's agreement with the float
model on the parity frames is recorded as a simulation, never as parity. Classifiers carry a ClassifierConfig with the
labels (softmax inside the model). Metadata: description, author, license, and the manifest's key fields.
On Linux coremltools converts, saves, reloads and checks the spec, but cannot predict: parity is recorded
as skipped with that reason, never as passed. On macOS parity runs through the Core ML backend.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ExportError, ExportRequest, TargetResult, require, version_of
from .targets import TARGETS

NAME = "coreml"
PRECISIONS = TARGETS[NAME].precisions  # options (--compute-precision, --palettize, --activations), defaults: targets.py
EXTRA = "export"
GRAYSCALE = 10  # ImageFeatureType.ColorSpace.GRAYSCALE in the Core ML spec
W8A8_TARGET = "iOS17"  # MIL quantize/dequantize of activations need iOS 17 / macOS 14
NEVER = 2**31  # a LinearQuantizer milestone that is never reached
WEIGHT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
CLASSIFIER_POST = {"activation": "none", "threshold": None, "mask_resize": "none"}  # softmax inside the model
log = logging.getLogger(__name__)


def check_available() -> None:
    require("coremltools")


def _task_module(request: ExportRequest) -> torch.nn.Module:
    """What Core ML runs: the raw-input model, with the softmax inside for classifiers."""
    model = request.model
    if request.spec.task == "classification":
        model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    return model.eval()


def _w8a8(request: ExportRequest) -> tuple[torch.nn.Module, int]:
    """(coremltools' LinearQuantizer graph of the model, int8 weights and activations, frames calibrated on)."""
    require("coremltools")
    from coremltools.optimize.torch.quantization import (
        LinearQuantizer,
        LinearQuantizerConfig,
        ModuleLinearQuantizerConfig,
    )

    from .progress import progress_of
    from .quantize import calibration_batches

    s = request.image_size
    example = torch.zeros(1, 1, s, s)
    batches = calibration_batches(request)
    config = LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric", activation_observer="min_max", weight_per_channel=True,
        milestones=[0, NEVER, NEVER, 0]))
    quantizer = LinearQuantizer(_task_module(request), config)
    prepared = quantizer.prepare(example_inputs=(example,), inplace=False)
    quantizer.step()  # step 0: observers on and BatchNorm frozen; fake quantisation stays off (a calibration pass)
    prepared.eval()
    progress = progress_of(request)
    progress.stage(f"calibrate on {len(batches)} frames", len(batches))
    with torch.no_grad():
        for batch in progress.each(batches):
            prepared(torch.from_numpy(batch))
    progress.stage("convert")
    return static_shapes(quantizer.finalize(inplace=False).eval(), example), len(batches)


def static_shapes(graph: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """Replace the integers the FX graph computes from tensor shapes (the U-Net decoder's upsample sizes) by
    their values at the fixed export size: the Core ML converter cannot cast traced shape arithmetic."""
    values: dict[torch.fx.Node, object] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, node):
            values[node] = result = super().run_node(node)
            return result

    with torch.no_grad():
        Recorder(graph).run(example)
    for node in graph.graph.nodes:
        value = values.get(node)
        if node.op != "placeholder" and type(value) is int:
            for user in list(node.users):
                user.args = torch.fx.node.map_arg(user.args, lambda a, n=node, v=value: v if a is n else a)
                user.kwargs = torch.fx.node.map_arg(user.kwargs, lambda a, n=node, v=value: v if a is n else a)
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def _convert(request: ExportRequest, model: torch.nn.Module | None = None, target: str = "iOS16"):
    ct = require("coremltools")
    model = _task_module(request) if model is None else model
    s = request.image_size
    example = torch.rand(1, 1, s, s) * 255
    traced = torch.jit.trace(model, example)
    compute = request.options["compute_precision"]  # validated, with its per-precision default, by the table
    kwargs: dict[str, Any] = {}
    outputs = None
    if request.spec.task == "classification":
        kwargs["classifier_config"] = ct.ClassifierConfig(list(request.spec.labels))
    else:
        outputs = [ct.TensorType(name=request.output_meaning)]
    mlmodel = ct.convert(
        traced, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
        inputs=[ct.ImageType(name="image", shape=(1, 1, s, s), color_layout=ct.colorlayout.GRAYSCALE,
                             scale=1.0, bias=0.0)],
        outputs=outputs, compute_precision=ct.precision.FLOAT16 if compute == "fp16" else ct.precision.FLOAT32,
        **kwargs)
    return mlmodel, compute


def _compress(mlmodel, request: ExportRequest) -> dict[str, Any]:
    import coremltools.optimize.coreml as cto

    bits = request.options.get("palettize")  # the table offers it for fp32/fp16 only: int8 already compresses
    if request.options.get("activations") == "int8":  # LinearQuantizer's graph carries its int8 weights
        return {"model": mlmodel, "weights": "int8 linear symmetric (per-channel)"}
    if request.precision == "int8":
        config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8")
        warn_zero_scale(request.model, config.weight_threshold)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 of a zero scale: ours says it (warn_zero_scale)
            quantized = cto.linear_quantize_weights(mlmodel, config=cto.OptimizationConfig(global_config=config))
        return {"model": quantized, "weights": "int8 linear symmetric (per-channel)"}
    if bits is not None:
        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=int(bits), mode="kmeans"))
        return {"model": cto.palettize_weights(mlmodel, config=config), "weights": f"{bits}-bit k-means palette"}
    return {"model": mlmodel, "weights": "float"}


def zero_scale_channels(model: torch.nn.Module, min_size: int = 0) -> dict[str, list[int]]:
    """{layer (module path): output channels whose weights are all zero} over the convolution/linear layers with
    more than `min_size` weights (what coremltools quantises): per-channel symmetric int8 gives them scale 0."""
    found = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)) or weight is None:
            continue
        if weight.numel() <= min_size:
            continue
        axis = 1 if isinstance(module, torch.nn.ConvTranspose2d) else 0  # output channels
        peak = weight.detach().abs().transpose(0, axis).reshape(weight.shape[axis], -1).amax(dim=1)
        dead = [int(c) for c in torch.nonzero(peak == 0).flatten()]
        if dead:
            found[name] = dead
    return found


def warn_zero_scale(model: torch.nn.Module, min_size: int) -> None:
    """Our warning for channels Core ML int8 quantises with a zero scale (coremltools divides 0 by 0 for them)."""
    found = zero_scale_channels(model, min_size)
    if not found:
        return
    layers = "; ".join(f"{name} ({len(ch)} of {_out_channels(model.get_submodule(name))} output channels: "
                       f"{', '.join(map(str, ch[:8]))}{', ...' if len(ch) > 8 else ''})" for name, ch in found.items())
    log.warning("Core ML int8: %d layer(s) have output channels whose weights are all zero, so their int8 scale is 0: "
                "%s. Those channels compute 0 in int8 as in float (their bias, if any, stays), so the outputs are "
                "unchanged, but the channels are dead weight: prune them from the model, or export --precision fp16 "
                "if a Core ML tool refuses the zero scales", len(found), layers)


def _out_channels(module: torch.nn.Module) -> int:
    return int(module.weight.shape[1 if isinstance(module, torch.nn.ConvTranspose2d) else 0])


def _describe(mlmodel, request: ExportRequest) -> None:
    spec = request.spec
    mlmodel.short_description = (f"pocus-edge {spec.task} model '{spec.name}' ({spec.encoder}); input: 8-bit "
                                 f"grayscale ultrasound frame resized to {request.image_size} x {request.image_size}")
    mlmodel.author = "pocus-edge export"
    mlmodel.license = "See the source checkpoint's license"
    mlmodel.user_defined_metadata["pocus_manifest"] = json.dumps({
        "name": spec.name, "task": spec.task, "precision": request.precision, "labels": list(spec.labels),
        "preprocessing": request.preprocessing, "threshold": spec.threshold})


def program_ops(spec) -> dict[str, int]:
    """{MIL op type: count} over the main blocks of a saved ML program's spec."""
    counts: dict[str, int] = {}
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                counts[op.type] = counts.get(op.type, 0) + 1
    return counts


def check_spec(path: Path, request: ExportRequest) -> dict[str, int]:
    """Reload the saved package (no prediction) and check inputs, outputs and classifier labels, and for W8A8 the
    quantized activation ops and int8 weights; returns the counts of the quantisation ops."""
    ct = require("coremltools")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ExportError(f"{path.name}: expected an ML program, got {spec.WhichOneof('Type')}")
    inputs = list(spec.description.input)
    if len(inputs) != 1 or inputs[0].type.WhichOneof("Type") != "imageType":
        raise ExportError(f"{path.name}: expected one image input")
    image = inputs[0].type.imageType
    if image.colorSpace != GRAYSCALE or (image.width, image.height) != (request.image_size, request.image_size):
        raise ExportError(f"{path.name}: input is not a {request.image_size}px grayscale image")
    names = [o.name for o in spec.description.output]
    if request.spec.task == "classification":
        if spec.description.predictedFeatureName != "classLabel":
            raise ExportError(f"{path.name}: classifier without a classLabel output")
    elif names != [request.output_meaning]:
        raise ExportError(f"{path.name}: outputs {names}, expected [{request.output_meaning}]")
    ops = program_ops(spec)
    quant = {k: ops.get(k, 0) for k in ("quantize", "dequantize", *WEIGHT_OPS)}
    if request.options.get("activations") == "int8" and (
            not quant["quantize"] or not quant["dequantize"] or not any(quant[k] for k in WEIGHT_OPS)):
        raise ExportError(f"{path.name}: W8A8 was asked for, but the saved program has {quant} (quantize/dequantize "
                          "of activations and constexpr int8 weights expected); coremltools dropped the quantisation")
    return quant


def convert(request: ExportRequest, workdir: Path) -> TargetResult:
    """Write model.mlpackage, reload it, check its spec; parity only where Core ML can predict."""
    check_available()
    w8a8 = request.options.get("activations") == "int8"
    try:
        quantized, frames = _w8a8(request) if w8a8 else (None, 0)
        mlmodel, compute = _convert(request, quantized, W8A8_TARGET if w8a8 else "iOS16")
        compressed = _compress(mlmodel, request)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"coremltools could not convert {request.spec.name}: {type(exc).__name__}: {str(exc)[:300]}")
    mlmodel = compressed["model"]
    _describe(mlmodel, request)
    path = workdir / TARGETS[NAME].model_file
    mlmodel.save(str(path))
    quant_ops = check_spec(path, request)
    s = request.image_size
    is_cls = request.spec.task == "classification"
    with torch.no_grad():
        shape = [int(d) for d in request.model(torch.zeros(1, 1, s, s)).shape]
    output = {"name": "classLabel_probs" if is_cls else request.output_meaning, "shape": shape, "dtype": "float32",
              "layout": "NCHW" if len(shape) == 4 else "NC",
              "meaning": "probabilities" if is_cls else request.output_meaning}
    skip = None if platform.system() == "Darwin" else (
        "Core ML predicts only on macOS; on Linux the package was converted, saved, reloaded and its spec checked")
    options: dict[str, Any] = {"activations": "float"}
    if w8a8:
        options = {"activations": "int8 symmetric per-tensor", "quantization": "W8A8: coremltools LinearQuantizer "
                   "(PyTorch, min/max observers) calibration, converted to MIL quantize/dequantize",
                   "calibration_images": frames, "calibration_source": request.calibration.origin,
                   "quantization_ops": quant_ops, "w8a8_torch_simulation": _simulated(request, quantized)}
    return TargetResult(
        model_file=path.name,
        inputs=[{"name": "image", "shape": [1, 1, s, s], "dtype": "uint8", "layout": "NCHW", "channels": 1,
                 "value_range": [0, 255], "quantization": {"scale": 1.0, "zero_point": 0}}],
        outputs=[output],
        target_options={"input_type": "ImageType GRAYSCALE scale=1 bias=0", "compute_precision": compute,
                        "weights": compressed["weights"],
                        "minimum_deployment_target": W8A8_TARGET if w8a8 else "iOS16",
                        "palettize": request.options.get("palettize"), **options},
        parity_skip_reason=skip,
        postprocessing=CLASSIFIER_POST if is_cls else None,
        tool_versions={"coremltools": version_of("coremltools")},
    )


def _simulated(request: ExportRequest, quantized: torch.nn.Module) -> dict[str, Any]:
    """The PyTorch W8A8 graph against the float model on the parity frames: what the quantisation costs before
    Core ML runs it (not parity: Core ML's own kernels are checked only on macOS). Both take raw 8-bit pixels (the
    raw-input fold), not the normalised frames models.inference.frame_outputs prepares: torch_outputs runs them."""
    from ..models.inference import torch_outputs
    from ..runtime.preprocess import normalized_chw
    from .parity import compare
    from .quantize import PRIMARY, postprocessing

    images = request.parity_images.images if request.parity_images is not None else []
    frames = [normalized_chw(im, request.preprocessing)[None] for im in images]
    if not frames:
        return {"status": "skipped", "reason": "no parity frames"}
    x = np.concatenate(frames)
    ref, out = torch_outputs(_task_module(request), x), torch_outputs(quantized, x)
    post = CLASSIFIER_POST if request.spec.task == "classification" else postprocessing(request)
    metric = PRIMARY[request.spec.task]
    value = compare(request.spec.task, ref, out, post)[metric]
    return {"frames": len(frames), metric: round(float(value), 6),
            "note": "PyTorch reference-quantized graph vs the float model, not Core ML"}
