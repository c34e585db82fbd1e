"""Every registry architecture x {segmentation, classification} exports with parity and runs in the torch-free
runtime. ONNX fp32 runs in CI; int8 (ONNX and TFLite, a conversion of 1-3 minutes each here) is the slow matrix
(`make test-slow`), recorded in benchmarks/kd/README.md."""

from __future__ import annotations

import numpy as np
import pytest

from pocus_edge.models.registry import ARCHITECTURES

SIZE = 64
TASKS = {"segmentation": "unet", "classification": "classifier"}
# random-weight smoke models are far more sensitive to int8 rounding than trained ones (DESIGN.md); the int8 goals
# are measured on trained models in benchmarks/. Here: clearly better than chance, and the pipeline works end to end.
SMOKE_INT8 = {"dice_mean": 0.8, "dice_min": 0.5, "prob_abs_diff_mean": 0.12, "top1_agreement": 0.6,
              "prob_abs_diff_max": 0.6}


def _check_runs(bundle, task: str) -> None:
    import pocus_edge.runtime as rt

    predictor = rt.load(bundle)
    frame = (np.add.outer(np.arange(80), np.arange(72)) % 256).astype(np.uint8)
    result = predictor(frame)
    if task == "segmentation":
        assert result.mask.shape == frame.shape
    else:
        probs = list(result.probabilities.values())
        assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-4


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("task", list(TASKS))
def test_every_architecture_exports_onnx_fp32_and_runs(tmp_path, phantom_dir, arch, task):
    from pocus_edge.export import export

    manifest = export(f"{TASKS[task]}-{arch}", "onnx", "fp32", tmp_path / "b", image_size=SIZE,
                      parity_data=phantom_dir)
    assert manifest["parity"]["status"] == "passed" and manifest["task"] == task
    _check_runs(tmp_path / "b", task)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_every_architecture_exports_int8_and_runs(tmp_path, phantom_dir, arch, task, target):
    from pocus_edge.export import export

    thresholds = {k: v for k, v in SMOKE_INT8.items()
                  if (k.startswith(("dice", "prob_abs_diff_mean")) if task == "segmentation"
                      else k in ("top1_agreement", "prob_abs_diff_max"))}
    manifest = export(f"{TASKS[task]}-{arch}", target, "int8", tmp_path / "b", image_size=SIZE,
                      calib_data=phantom_dir, parity_thresholds=thresholds)
    assert manifest["parity"]["status"] == "passed"
    _check_runs(tmp_path / "b", task)
