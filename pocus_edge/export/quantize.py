"""Static int8 quantisation of ONNX models (QDQ format) calibrated on real ultrasound frames.

Weights: int8, symmetric, per output channel. Activations: uint8 asymmetric for ONNX Runtime CPU
(its fastest U8S8 kernels), or int8 symmetric for TensorRT's explicit quantisation. Calibration
frames go through the runtime's own pre-processing, so the ranges are those the device will see.
Methods: minmax (default), entropy, percentile (99.999). A final linear layer that writes a graph output
(a classifier's logits) stays in float: a few thousand multiply-adds, and its rounding decides the class.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .base import ExportError, ExportRequest, require
from .targets import TARGETS

CALIBRATION_METHODS = TARGETS["onnx"].options["calibration_method"].values  # one list: the target table
HISTOGRAM_MAX_IMAGES = 24
log = logging.getLogger(__name__)


def calibration_batches(request: ExportRequest) -> list[np.ndarray]:
    """The calibration frames as 1 x C x S x S float32 model inputs."""
    from ..runtime.preprocess import normalized_chw

    if request.calibration is None or not request.calibration.images:
        raise ExportError("int8 needs calibration images: pass --calib-data DIR (real ultrasound frames, ~300)")
    return [normalized_chw(img, request.preprocessing)[None] for img in request.calibration.images]


def output_linear_layers(model_path: Path) -> list[str]:
    """Names of Gemm/MatMul nodes whose result is a graph output (e.g. a classifier's logits layer)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and outputs.intersection(n.output)]


def quantize_onnx_static(src: Path, dst: Path, request: ExportRequest, symmetric_activations: bool) -> dict[str, Any]:
    """fp32 ONNX -> QDQ int8 ONNX; returns the settings for the manifest's target_options."""
    require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = request.options.get("calibration_method", "minmax")
    if method not in CALIBRATION_METHODS:
        raise ExportError(f"--calib-method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    batches = calibration_batches(request)
    if method != "minmax" and len(batches) > HISTOGRAM_MAX_IMAGES:
        # ONNX Runtime's histogram calibrators keep every activation of every image in memory: 100 frames of a
        # 256 px U-Net-R50 exhausted 24 GB here. Cap them rather than let the export be OOM-killed.
        log.warning("%s calibration keeps all activations in memory; using %d of %d images", method,
                    HISTOGRAM_MAX_IMAGES, len(batches))
        batches = batches[:HISTOGRAM_MAX_IMAGES]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"image": b} for b in batches])

        def get_next(self):
            return next(self._it, None)

    prepared = dst.with_name(".model-prep.onnx")
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # pre-processing is an optimisation; quantise the plain graph if it fails
        log.warning("onnxruntime quant_pre_process failed (%s); quantising the unoptimised graph", exc)
        prepared.write_bytes(src.read_bytes())
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    extra = {"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    try:  # the histogram calibrators print progress; stdout belongs to `--json`
        keep_float = output_linear_layers(prepared)
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(str(prepared), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=methods[method],
                            nodes_to_exclude=keep_float, extra_options=extra)
    finally:
        prepared.unlink(missing_ok=True)
    return {"quantization": "static QDQ", "weights": "int8 symmetric per-channel",
            "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
            "calibration_method": method, "calibration_images": len(batches), "float_layers": keep_float,
            "calibration_source": request.calibration.origin}
