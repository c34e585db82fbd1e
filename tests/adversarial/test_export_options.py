"""Adversarial export options: each case is one request a user (or a script) could make and the exact refusal.

Every case goes through the public `export()` with model building and converter checks replaced by a tripwire,
so a refusal that came after building anything fails the test; nothing may be left in the output folder.
"""

from __future__ import annotations

import re

import pytest

from pocus_edge.errors import ConfigError

CASES = [
    # (target, precision, options, expected message: a regex)
    ("onnx", "fp32", {"nhwc": True, "palettize": 4, "io": "float", "compute_precision": "fp32"},
     r"--nhwc \(tflite only\), --palettize 4 \(coreml fp32/fp16 only\), --io float \(tflite int8 only\), "
     r"--compute-precision fp32 \(coreml only\) do not apply to onnx fp32, which takes: --batch 1\|dynamic, "
     r"--fold-upsample, .*--ort-format\b"),
    ("coreml", "int8", {"nhwc": True, "calib_data": "frames"}, r"--nhwc \(tflite only\) does not apply to coreml int8"),
    ("coreml", "fp16", {"calib_data": "frames"}, r"--calib-data frames \(onnx/tflite/coreml/tensorrt int8 only\) does "
     r"not apply to coreml fp16.*pass them as --parity-data DIR"),
    ("onnx", "fp16", {"calib_data": "frames"}, r"--calib-data frames .* does not apply to onnx fp16"),
    ("tensorrt", "fp32", {"num_calib": 100},
     r"--num-calib 100 \(onnx/tflite/coreml/tensorrt int8 only\) does not apply"),
    ("tflite", "fp32", {"io": "int8"}, r"--io int8 \(tflite int8 only\) does not apply to tflite fp32"),
    ("tflite", "int8", {"calib_data": "frames", "io": "int16"}, r"--io 'int16': choose int8 or float for tflite int8"),
    ("tflite", "int8", {"calib_data": "frames", "calibration_method": "entropy"},
     r"--calib-method entropy \(onnx/tensorrt int8 only\) does not apply to tflite int8"),
    ("onnx", "int8", {"calib_data": "frames", "calibration_method": "kmeans"},
     r"--calib-method 'kmeans': choose minmax, entropy, percentile or auto for onnx int8"),
    ("coreml", "fp16", {"palettize": 5}, r"--palettize 5: choose 4, 6 or 8 for coreml fp16"),
    ("coreml", "fp16", {"palettize": "4"}, r"--palettize '4': choose 4, 6 or 8"),  # a string is not a bit count
    ("coreml", "int8", {"palettize": 4}, r"--palettize 4 \(coreml fp32/fp16 only\) does not apply to coreml int8"),
    ("coreml", "fp16", {"compute_precision": "fp8"}, r"--compute-precision 'fp8': choose fp16 or fp32"),
    ("tflite", "fp16", {"dynamic_batch": True}, r"--batch dynamic \(onnx, tensorrt only\) does not apply"),
    ("tensorrt", "fp16", {"ort_format": True}, r"--ort-format \(onnx only\) does not apply to tensorrt fp16"),
    ("onnx", "fp32", {"build_engine": True}, r"--build-engine \(tensorrt only\) does not apply to onnx fp32"),
    ("onnx", "fp32", {"nhcw": True}, r"export option\(s\) 'nhcw' unknown\. Did you mean 'nhwc'\?"),
    ("tflite", "fp32", {"nhwc": 1}, r"--nhwc 1: choose False or True"),  # 1 is not True
    ("tflite", "int8", {"calib_data": "frames", "fold_upsampling": True},
     r"--fold-upsample: tflite int8 with int8 I/O \(PT2E\) cannot convert the folded decoder; drop it or add "
     r"--io float"),
    ("onnx", "int8", {}, r"onnx int8 needs --calib-data DIR"),
    ("tensorrt", "int8", {"calib_data": None}, r"tensorrt int8 needs --calib-data DIR"),
    ("coreml", "int4", {}, r"--precision 'int4' is not available for coreml; choose one of fp32, fp16, int8"),
    ("tflite_int8", "fp32", {}, r"--target 'tflite_int8' is unknown\. Did you mean 'tflite'\?"),
]


@pytest.fixture
def tripwire(monkeypatch):
    """Building the model or loading a converter before validation fails the test."""
    from pocus_edge.export import api

    def built(*args, **kwargs):
        raise AssertionError("export built something before validating its options")

    monkeypatch.setattr(api, "resolve_model", built)
    monkeypatch.setattr(api, "target_module", built)
    monkeypatch.setattr(api, "make_workdir", built)


@pytest.mark.parametrize("target,precision,options,expected", CASES,
                         ids=[f"{t}-{p}-{'-'.join(o) or 'none'}" for t, p, o, _ in CASES])
def test_refused_before_anything_is_built(target, precision, options, expected, tripwire, tmp_path):
    from pocus_edge.export import export

    with pytest.raises(ConfigError) as err:
        export("unet-resnet50", target, precision, tmp_path / "bundle", image_size=64, **options)
    assert re.search(expected, str(err.value)), str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target,precision,options", [
    ("onnx", "fp32", {"nhwc": False, "dynamic_batch": False, "fold_upsampling": False}),  # off is never refused
    ("tflite", "int8", {"calib_data": "frames", "io": "float", "fold_upsampling": True}),
    ("coreml", "fp32", {"palettize": 6, "compute_precision": "fp16"}),
    ("trt", "int8", {"calib_data": "frames", "calibration_method": "percentile", "build_engine": False}),
])
def test_valid_requests_pass_validation(target, precision, options, tripwire, tmp_path):
    """Accepted requests get past validation and reach the (tripwired) build step."""
    from pocus_edge.export import export

    with pytest.raises(AssertionError, match="built something"):
        export("unet-resnet50", target, precision, tmp_path / "bundle", image_size=64, **options)
