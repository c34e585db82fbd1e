"""int8 variants of the BUSI U-Net against its fp32 bundle: does keeping layers in float, or float I/O, close
the gap to the Dice-agreement goal (>= 0.98)?

Same calibration (100 frames) and parity frames (64 held-out) as run_export_bench.sh. Variants:
ONNX Runtime static QDQ with nothing / the head / the head and stem / the last three convolutions and the stem
left in float; TFLite int8 with float I/O (ai-edge-quantizer) beside the PT2E int8-I/O bundle.
The fp32 sources are the `-nofold` bundles (`pocus-export … --no-fold-upsample`, see README.md): int8 exports
quantise the decoder as trained.
Usage: .venv/bin/python benchmarks/export/int8_variants.py > benchmarks/export/int8_variants.json
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pocus_edge.export.data import calibration_and_parity
from pocus_edge.export.parity import compare
from pocus_edge.runtime.postprocess import postprocessing_for
from pocus_edge.runtime.preprocess import normalization, normalized_chw

SEG_POST = postprocessing_for("segmentation", ["lesion"], 0.5)  # the recorded BUSI U-Net: one class, card threshold 0.5

BUNDLES = Path("benchmarks/export/bundles")
DATA = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/busi")


def run_onnx(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": b})[0] for b in batches])


def run_tflite(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for b in batches:
        x = b
        if i["dtype"] == np.int8:
            s, z = i["quantization"]
            x = np.clip(np.round(b / s + z), -128, 127).astype(np.int8)
        it.set_tensor(i["index"], x)
        it.invoke()
        y = it.get_tensor(o["index"])
        if o["dtype"] == np.int8:
            s, z = o["quantization"]
            y = (y.astype(np.float32) - z) * s
        outs.append(y)
    return np.concatenate(outs)


def onnx_variants(calib: list[np.ndarray], parity: list[np.ndarray], work: Path) -> dict:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = BUNDLES / "unet-onnx-fp32-nofold" / "model.onnx"  # the graph int8 exports quantise (no decoder fold)
    reference = run_onnx(src, parity)
    prepared = work / "prep.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
    variants = {"all int8": [], "head in float": convs[-1:], "head + stem in float": convs[:1] + convs[-1:],
                "last 3 convs + stem in float": convs[:1] + convs[-3:]}
    results = {}
    for name, excluded in variants.items():
        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"image": b} for b in calib])

            def get_next(self):
                return next(self.it, None)

        out = work / "q.onnx"
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
                        extra_options={"WeightSymmetric": True})
        results[f"onnx: {name}"] = compare("segmentation", reference, run_onnx(out, parity), SEG_POST)
    return results


def tflite_variants(calib: list[np.ndarray], parity: list[np.ndarray], work: Path) -> dict:
    from pocus_edge.export.tflite import quantize_int8_float_io

    src = BUNDLES / "unet-tflite-fp32-nofold" / "model.tflite"
    reference = run_tflite(src, parity)
    results = {"tflite: PT2E, int8 I/O (the recorded bundle)": compare(
        "segmentation", reference, run_tflite(BUNDLES / "unet-tflite-int8" / "model.tflite", parity), SEG_POST)}
    quantize_int8_float_io(src, work / "f.tflite", calib)  # what `--io float` does
    results["tflite: ai-edge-quantizer, float I/O (--io float)"] = compare(
        "segmentation", reference, run_tflite(work / "f.tflite", parity), SEG_POST)
    return results


def main() -> None:
    start = time.time()
    calibration, parity = calibration_and_parity(DATA, None, 100, 64)
    pre = normalization(256, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    calib = [normalized_chw(i, pre)[None] for i in calibration.images]
    held_out = [normalized_chw(i, pre)[None] for i in parity.images]
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # quantisers print reports
        results = {**onnx_variants(calib, held_out, Path(tmp)), **tflite_variants(calib, held_out, Path(tmp))}
    print(json.dumps({"model": "benchmarks/downstream/runs/busi-seg-rand (U-Net-R50, 256 px)",
                      "reference": "the fp32 bundle of the same backend", "calibration_images": len(calib),
                      "parity_images": len(held_out), "date": time.strftime("%Y-%m-%d"),
                      "wall_s": round(time.time() - start), "results": results}, indent=1))


if __name__ == "__main__":
    main()
