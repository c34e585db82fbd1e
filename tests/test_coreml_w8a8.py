"""Core ML W8A8 (`--target coreml --precision int8 --activations int8`): activation ranges calibrated on the
--calib-data frames, int8 weights and activations in the saved ML program, parity recorded as skipped off macOS.

Core ML cannot predict on Linux: the package is converted, saved, reloaded and its spec checked here (quantize /
dequantize ops on activations, constexpr int8 weights), and the PyTorch W8A8 graph's agreement is recorded as a
simulation. Without --activations int8, Core ML int8 stays weights only and has no activation quantize ops.
"""

from __future__ import annotations

import json
import platform

import pytest

from pocus_edge.export.base import ExportError
from pocus_edge.runtime import verify_bundle

pytest.importorskip("coremltools")
SIZE = 32


def _spec_ops(bundle):
    import coremltools as ct

    from pocus_edge.export.coreml import program_ops

    return program_ops(ct.models.MLModel(str(bundle / "model.mlpackage"), skip_model_load=True).get_spec())


@pytest.fixture(scope="module")
def w8a8(tmp_path_factory, phantom_dir):
    from pocus_edge.export import export

    out = tmp_path_factory.mktemp("w8a8") / "bundle"
    return out, export("unet-resnet18", "coreml", "int8", out, image_size=SIZE, calib_data=phantom_dir,
                       activations="int8")


def test_w8a8_quantizes_activations_calibrated_on_the_frames(w8a8):
    bundle, manifest = w8a8
    verify_bundle(bundle)
    options = manifest["target_options"]
    assert options["activations"] == "int8 symmetric per-tensor" and options["minimum_deployment_target"] == "iOS17"
    frames = json.loads((bundle / "calibration_frames.json").read_text())
    assert options["calibration_images"] == frames["calibration"]["count"] == len(frames["calibration"]["frames"]) > 0
    calib = {f["sha256"] for f in frames["calibration"]["frames"]}
    assert calib.isdisjoint(f["sha256"] for f in frames["parity"]["frames"])
    ops = _spec_ops(bundle)  # the saved, reloaded program, read independently of the exporter's own check
    assert ops.get("quantize", 0) > 0 and ops.get("dequantize", 0) > 0 and ops.get("constexpr_affine_dequantize", 0)
    assert options["quantization_ops"]["quantize"] == ops["quantize"]
    simulated = options["w8a8_torch_simulation"]
    assert simulated["frames"] == frames["parity"]["count"] and 0 < simulated["dice_mean"] <= 1
    if platform.system() != "Darwin":
        assert manifest["parity"]["status"] == "skipped" and "macOS" in manifest["parity"]["reason"]


def test_weights_only_int8_has_no_activation_quantization_and_the_spec_check_catches_it(w8a8, bundle_factory):
    from conftest import TEST_IMAGE_SIZE

    from pocus_edge.export.coreml import check_spec

    weights_only = bundle_factory("coreml", "int8", model="classifier-resnet50")  # the session's (test_export's)
    manifest = verify_bundle(weights_only)
    assert manifest["target_options"]["activations"] == "float"
    assert manifest["target_options"]["minimum_deployment_target"] == "iOS16"
    assert "calibration_frames.json" not in manifest["files"]
    ops = _spec_ops(weights_only)
    assert ops.get("quantize", 0) == 0 and ops.get("constexpr_affine_dequantize", 0) > 0

    def w8a8_request(task: str, image_size: int):  # what check_spec reads: a W8A8 request
        return type("Request", (), {"image_size": image_size, "output_meaning": "mask_logits",
                                    "options": {"activations": "int8"}, "spec": type("Spec", (), {"task": task})()})()

    with pytest.raises(ExportError, match="W8A8 was asked for, but the saved program has"):
        check_spec(weights_only / "model.mlpackage", w8a8_request("classification", TEST_IMAGE_SIZE))
    assert check_spec(w8a8[0] / "model.mlpackage", w8a8_request("segmentation", SIZE))["quantize"] > 0


def test_static_shapes_replaces_shape_arithmetic_by_constants():
    import torch
    import torch.nn.functional as F

    from pocus_edge.export.coreml import static_shapes

    class Up(torch.nn.Module):
        def forward(self, x, skip):
            return F.interpolate(x, size=(skip.shape[2], skip.shape[3])) + skip

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = Up()

        def forward(self, x):
            return self.up(x[:, :, ::2, ::2], x)

    graph = torch.fx.symbolic_trace(Net())
    assert "shape" in graph.code
    x = torch.rand(1, 1, 8, 8)
    fixed = static_shapes(graph, x)
    assert "shape" not in fixed.code and "size = (8, 8)" in fixed.code
    assert torch.equal(fixed(x), Net()(x))
