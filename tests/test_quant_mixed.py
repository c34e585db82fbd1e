"""int8 sensitivity report and automatic mixed precision on a model with one deliberately fragile layer.

The fragile layer is a 1x1 convolution that reads a tensor with one huge-range channel (x 1e4, as outlier
channels in real networks): uint8 per-tensor quantisation of that input erases the other channels. Kept in float,
it reads the float tensor (the ReLU that ONNX Runtime folds into the quantiser restored) and the model agrees
with fp32 again; keeping the layer that writes the tensor in float does not help.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pocus_edge.errors import ConfigError
from pocus_edge.export.base import ExportError
from pocus_edge.export.targets import resolve_options
from pocus_edge.models.tasks import TaskSpec
from pocus_edge.runtime import verify_bundle

pytest.importorskip("onnxruntime")
SIZE = 32


class Fragile(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.fragile = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 1, 3, padding=1)
        with torch.no_grad():
            self.body.weight[0] *= 1e4  # channel 0 of body's output is huge (per-channel weights do not mind)
            self.body.bias[0] *= 1e4
            self.fragile.weight[:, 0] *= 1e-4  # ... and contributes normally in float
            self.head.bias.zero_()
            logits = self(torch.randn(4, 3, SIZE, SIZE))
            self.head.bias -= logits.median()  # about half the pixels foreground: Dice is informative

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.body(x))
        x = torch.relu(self.fragile(x))
        return self.head(x)


@pytest.fixture
def fragile(monkeypatch):
    """export() resolves any MODEL to the fragile network."""
    from pocus_edge.export import api

    spec = TaskSpec(name="fragile", task="segmentation", encoder="toy", labels=["background", "lesion"],
                    image_size=SIZE, source="test: one fragile layer")
    monkeypatch.setattr(api, "resolve_model", lambda model, size: (Fragile().eval(), spec))
    return spec


def _export(tmp_path, name, phantom_dir, **options):
    from pocus_edge.export import export

    return export("fragile", "onnx", "int8", tmp_path / name, image_size=SIZE, calib_data=phantom_dir,
                  **options)


def test_report_ranks_the_fragile_layer_first_and_fallback_keeps_it_in_float(tmp_path, phantom_dir, fragile):
    manifest = _export(tmp_path, "mixed", phantom_dir, explain=True)
    bundle = tmp_path / "mixed"
    verify_bundle(bundle)
    report = json.loads((bundle / "quant_report.json").read_text())
    top = report["layers"][0]
    assert top["module"] == "fragile" and len(report["layers"]) == 4
    assert report["frames"] == min(8, manifest["target_options"]["mixed_precision"]["frames"]) > 0
    assert top["quantized_alone"]["activation_sqnr_db"] < 10 < report["layers"][1]["quantized_alone"][
        "activation_sqnr_db"]
    options = manifest["target_options"]
    assert options["float_layers"] == [top["layer"]] and options["float_layer_modules"] == {top["layer"]: "fragile"}
    mixed = options["mixed_precision"]
    assert mixed["full_int8"]["dice_mean"] < 0.95 <= mixed["mixed"]["dice_mean"], mixed
    assert mixed["steps"][0]["float_layers"] == [top["layer"]] and mixed["result"] == "target met"
    assert set(mixed["latency_ms"]) >= {"full_int8", "mixed", "threads", "runs"}
    assert manifest["parity"]["status"] == "passed" and manifest["parity"]["metrics"]["dice_mean"] >= 0.95
    assert {"quant_report.json", "quant_report.md", "quant_report.png", "calibration_frames.json"} <= set(
        manifest["files"])
    assert f"`{top['layer']}` | fragile" in (bundle / "quant_report.md").read_text()
    frames = json.loads((bundle / "calibration_frames.json").read_text())
    assert frames["calibration"]["count"] == options["calibration_images"] == len(frames["calibration"]["frames"])
    calib = {f["sha256"] for f in frames["calibration"]["frames"]}
    assert calib.isdisjoint(f["sha256"] for f in frames["parity"]["frames"]) and frames["parity"]["count"] > 0
    # forced by hand: the same layer, no search
    forced = _export(tmp_path, "forced", phantom_dir, float_layers=top["layer"])
    assert forced["target_options"]["float_layers"] == [top["layer"]]
    assert forced["target_options"]["mixed_precision"]["mode"] == "forced with --float-layers"


def test_without_fallback_or_within_a_zero_limit_it_fails_and_writes_nothing(tmp_path, phantom_dir, fragile):
    with pytest.raises(ExportError, match="parity failed .*dice_mean"):
        _export(tmp_path, "plain", phantom_dir, mixed_precision=False)
    with pytest.raises(ExportError, match=r"misses the accuracy target .*full int8 \(minmax calibration\) "
                                          r"dice_mean .*best .* tried in order: none"):
        _export(tmp_path, "limited", phantom_dir, max_float_layers=0)
    assert not any(p.name.startswith((".plain", ".limited", "plain", "limited")) for p in tmp_path.iterdir())


def test_float_layers_with_an_unknown_name_is_a_clear_error(tmp_path, phantom_dir, fragile):
    with pytest.raises(ConfigError, match=r"--float-layers conv99: not a quantisable layer.*4 layers named like "
                                          r"node_conv2d.*--explain"):
        _export(tmp_path, "x", phantom_dir, float_layers="conv99")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key,value", [("accuracy_target", 1.5), ("max_float_layers", -1)])
def test_bad_accuracy_options(tmp_path, phantom_dir, fragile, key, value):
    flag = "--" + key.replace("_", "-")
    with pytest.raises(ConfigError, match=flag):
        _export(tmp_path, "x", phantom_dir, **{key: value})


def test_coreml_refuses_float_layers_and_says_where_they_apply():
    with pytest.raises(ConfigError, match=r"--float-layers conv1 \(onnx/tflite/tensorrt int8 only\) does not apply to "
                                          r"coreml int8.*built for onnx, tensorrt and tflite int8"):
        resolve_options("coreml", "int8", {"float_layers": "conv1"})
    assert resolve_options("tflite", "int8", {"calib_data": "frames/", "float_layers": "conv1"})["float_layers"] == \
        "conv1"  # tflite int8 takes it (tests/test_tflite_mixed.py)


def test_phantom_parity_only_by_name_and_the_manifest_says_so(tmp_path, phantom_dir, fragile):
    manifest = _export(tmp_path, "ph", phantom_dir, parity_data="phantoms", accuracy_target=0.9)
    assert manifest["parity"]["data"] == "synthetic phantoms"
    assert manifest["target_options"]["mixed_precision"]["accuracy_target"] == {"dice_mean": 0.9}
