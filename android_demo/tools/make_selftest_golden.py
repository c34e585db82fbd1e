"""Write the self-test golden cases for the JVM core (SelfTestTest): real bundles exported by Python, with the
outputs a device's model would return for their reference vectors.

    python tools/make_selftest_golden.py OUT_DIR

Per case, OUT_DIR/CASE/bundle is a bundle from `pocus_edge.export.export` of a tiny network (two 3x3 convolutions,
or a convolution and a linear layer for the classifier, 32 px) and OUT_DIR/CASE/runs.json holds, per reference
frame, the output of the bundle's own model ("good": the Python runtime's backend on the stored input, dequantised,
in the model's layout, as the app's BundleModel.run returns it) and of the same network with other weights fed the
same bytes ("swapped": a model file swapped on the device), with Python's metrics (runtime/selftest.py) for both.
The JVM cannot run ONNX or TFLite models, so these outputs stand in for the device's.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from pocus_edge.data.phantoms import write_phantom_dataset
from pocus_edge.export import export
from pocus_edge.models.tasks import TaskSpec
from pocus_edge.runtime import load
from pocus_edge.runtime.preprocess import dequantize
from pocus_edge.runtime.selftest import frame_metrics, judge, read_vectors, run_selftest

SIZE = 32
LOOSE_INT8 = {"dice_mean": 0.5, "dice_min": 0.0, "prob_abs_diff_mean": 0.2}  # random tiny nets, not trained ones


def network(task: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if task == "segmentation":
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)).eval()
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def bundle(out: Path, task: str, seed: int, target: str, precision: str, calib: Path, **options) -> Path:
    labels = ["background", "lesion"] if task == "segmentation" else ["benign", "malignant", "normal"]
    spec = TaskSpec(name=f"golden-{task}", task=task, encoder="tiny", labels=labels, image_size=SIZE,
                    threshold=0.5 if task == "segmentation" else None, source="android_demo golden")
    if precision == "int8":
        options.update(calib_data=calib, num_calib=16, parity_thresholds=LOOSE_INT8)
    with mock.patch("pocus_edge.export.api.resolve_model", lambda model, size: (network(task, seed), spec)):
        export("golden", target, precision, out, image_size=SIZE, num_parity=12, **options)
    return out


def as_app_output(raw: np.ndarray, manifest: dict) -> list[float]:
    """What BundleModel.run returns: dequantised with the manifest's scale, in the model's own layout."""
    q = manifest["outputs"][0].get("quantization")
    if raw.dtype in (np.int8, np.uint8):
        raw = dequantize(raw, q["scale"], q["zero_point"])
    return raw.astype(np.float32).reshape(-1).tolist()


def write_case(out: Path, name: str, task: str, target: str, precision: str, calib: Path, **options) -> None:
    good = bundle(out / name / "bundle", task, 0, target, precision, calib, **options)
    with tempfile.TemporaryDirectory() as tmp:
        other = load(bundle(Path(tmp) / "other", task, 1, target, precision, calib, **options))
        predictor = load(good)
        manifest = predictor.manifest
        vectors = read_vectors(good, manifest)
        report = run_selftest(predictor)
        assert report.passed, report.failure_line()
        runs: dict = {"case": name, "good": [], "swapped": [], "python": {"good": [], "swapped": []},
                      "input_head": []}
        failures = []
        for k in range(len(vectors.names)):
            x, expected = vectors.inputs[k:k + 1], vectors.expected[k:k + 1]
            mine, theirs = predictor.run_model(x), other.run_model(x)  # a swapped file gets the same bytes
            runs["good"].append(as_app_output(mine, manifest))
            runs["swapped"].append(as_app_output(theirs, manifest))
            runs["python"]["good"].append(frame_metrics(expected, mine, manifest))
            runs["python"]["swapped"].append(frame_metrics(expected, theirs, manifest))
            runs["input_head"].append(x.reshape(-1)[:16].astype(float).tolist())
            failures.append(bool(judge(runs["python"]["swapped"][-1], vectors.index["tolerance"])))
        assert failures[0], f"{name}: the swapped model passes frame 0; the golden case would prove nothing"
        runs["python"]["swapped_fails"] = failures
    (out / name / "runs.json").write_text(json.dumps(runs))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    calib = write_phantom_dataset(out / "phantoms", 24, size=(64, 64), seed=3)
    write_case(out, "onnx_fp32_seg", "segmentation", "onnx", "fp32", calib)
    write_case(out, "tflite_int8_nhwc_seg", "segmentation", "tflite", "int8", calib, nhwc=True,
               mixed_precision=False)  # the self-test, not the float-layer search (it would halve the frames)
    write_case(out, "onnx_fp32_cls", "classification", "onnx", "fp32", calib)
    print(f"wrote 3 self-test golden cases to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
