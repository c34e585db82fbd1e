"""Core ML target: `model.mlpackage` (ML program) for iOS 16+/macOS 13+.

The input is a grayscale `ImageType` of the export size with scale 1 and bias 0: the app hands Core ML
the 8-bit ultrasound frame as is, and the gray->RGB replication and mean/std normalisation are folded
exactly into the first convolution (see wrappers.fold_raw_input). Precisions: fp32 and fp16 compute
(`--compute-precision`, fp16 by default for fp16 bundles), int8 = linear symmetric weight quantisation;
`--palettize {4,6,8}` adds k-means weight palettisation. Classifiers carry a ClassifierConfig with the
labels (softmax inside the model). Metadata: description, author, license, and the manifest's key fields.
On Linux coremltools converts, saves, reloads and checks the spec, but cannot predict: parity is recorded
as skipped with that reason, never as passed. On macOS parity runs through the Core ML backend.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch

from .base import ExportError, ExportRequest, TargetResult, require, version_of
from .targets import TARGETS

NAME = "coreml"
PRECISIONS = TARGETS[NAME].precisions  # options (--compute-precision, --palettize), defaults: targets.py
EXTRA = "export"
GRAYSCALE = 10  # ImageFeatureType.ColorSpace.GRAYSCALE in the Core ML spec


def check_available() -> None:
    require("coremltools")


def _convert(request: ExportRequest):
    ct = require("coremltools")
    model = request.model
    if request.spec.task == "classification":
        model = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    model = model.eval()
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
        traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
        inputs=[ct.ImageType(name="image", shape=(1, 1, s, s), color_layout=ct.colorlayout.GRAYSCALE,
                             scale=1.0, bias=0.0)],
        outputs=outputs, compute_precision=ct.precision.FLOAT16 if compute == "fp16" else ct.precision.FLOAT32,
        **kwargs)
    return mlmodel, compute


def _compress(mlmodel, request: ExportRequest) -> dict[str, Any]:
    import coremltools.optimize.coreml as cto

    bits = request.options.get("palettize")  # the table offers it for fp32/fp16 only: int8 already compresses
    if request.precision == "int8":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                                                                  dtype="int8"))
        return {"model": cto.linear_quantize_weights(mlmodel, config=config),
                "weights": "int8 linear symmetric (per-channel)"}
    if bits is not None:
        config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=int(bits), mode="kmeans"))
        return {"model": cto.palettize_weights(mlmodel, config=config), "weights": f"{bits}-bit k-means palette"}
    return {"model": mlmodel, "weights": "float"}


def _describe(mlmodel, request: ExportRequest) -> None:
    spec = request.spec
    mlmodel.short_description = (f"pocus-edge {spec.task} model '{spec.name}' ({spec.encoder}); input: 8-bit "
                                 f"grayscale ultrasound frame resized to {request.image_size} x {request.image_size}")
    mlmodel.author = "pocus-edge export"
    mlmodel.license = "See the source checkpoint's license"
    mlmodel.user_defined_metadata["pocus_manifest"] = json.dumps({
        "name": spec.name, "task": spec.task, "precision": request.precision, "labels": list(spec.labels),
        "preprocessing": request.preprocessing, "threshold": spec.threshold})


def check_spec(path: Path, request: ExportRequest) -> None:
    """Reload the saved package (no prediction) and check inputs, outputs and classifier labels."""
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


def convert(request: ExportRequest, workdir: Path) -> TargetResult:
    """Write model.mlpackage, reload it, check its spec; parity only where Core ML can predict."""
    check_available()
    try:
        mlmodel, compute = _convert(request)
        compressed = _compress(mlmodel, request)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"coremltools could not convert {request.spec.name}: {type(exc).__name__}: {str(exc)[:300]}")
    mlmodel = compressed["model"]
    _describe(mlmodel, request)
    path = workdir / TARGETS[NAME].model_file
    mlmodel.save(str(path))
    check_spec(path, request)
    s = request.image_size
    is_cls = request.spec.task == "classification"
    with torch.no_grad():
        shape = [int(d) for d in request.model(torch.zeros(1, 1, s, s)).shape]
    output = {"name": "classLabel_probs" if is_cls else request.output_meaning, "shape": shape, "dtype": "float32",
              "layout": "NCHW" if len(shape) == 4 else "NC",
              "meaning": "probabilities" if is_cls else request.output_meaning}
    skip = None if platform.system() == "Darwin" else (
        "Core ML predicts only on macOS; on Linux the package was converted, saved, reloaded and its spec checked")
    return TargetResult(
        model_file=path.name,
        inputs=[{"name": "image", "shape": [1, 1, s, s], "dtype": "uint8", "layout": "NCHW", "channels": 1,
                 "value_range": [0, 255], "quantization": {"scale": 1.0, "zero_point": 0}}],
        outputs=[output],
        target_options={"input_type": "ImageType GRAYSCALE scale=1 bias=0", "compute_precision": compute,
                        "weights": compressed["weights"], "minimum_deployment_target": "iOS16",
                        "palettize": request.options.get("palettize")},
        parity_skip_reason=skip,
        postprocessing={"activation": "none", "threshold": None, "mask_resize": "none"} if is_cls else None,
        tool_versions={"coremltools": version_of("coremltools")},
    )
