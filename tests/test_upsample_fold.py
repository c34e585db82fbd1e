"""The U-Net decoder rewrite (nearest 2x upsample folded into the next 3x3 conv) changes cost, not outputs."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import pocus_here

from pocus_edge.errors import ConfigError
from pocus_edge.export import export
from pocus_edge.export.upsample_fold import UpsampledConv3x3, fold_decoder_upsampling
from pocus_edge.models.registry import create_model
from pocus_edge.models.tasks import randomize_batchnorm


@pytest.mark.parametrize("height,width", [(1, 1), (3, 5), (8, 8)])
def test_phase_convolutions_equal_conv_after_nearest_upsampling(height, width):
    torch.manual_seed(height * 10 + width)
    weight = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    x = torch.randn(2, 5, height, width, dtype=torch.float64)
    expected = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    got = UpsampledConv3x3(weight)(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)  # exact math: borders and every phase


@pytest.mark.parametrize("image_size", [64, 96])
def test_folded_unet_gives_the_same_outputs(image_size):
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("segmentation", "resnet18"), seed=3).eval()
    folded, blocks = fold_decoder_upsampling(model, image_size)
    everything, all_blocks = fold_decoder_upsampling(model, image_size, min_channels=1)
    assert (blocks, all_blocks) == (4, 5)  # the 16-channel last block is left alone by default
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        expected = model(x)
        for candidate in (folded, everything):
            assert torch.allclose(candidate(x), expected, atol=1e-4 * expected.abs().max().item())
    assert type(model.decoder.blocks[0]).__name__ == "UnetDecoderBlock"  # the caller's model is not modified


def test_models_without_unet_decoder_are_unchanged():
    model = create_model("classification", "resnet18").eval()
    assert fold_decoder_upsampling(model, 64) == (model, 0)
    unet = create_model("segmentation", "resnet18").eval()
    assert fold_decoder_upsampling(unet, 100)[1] == 0  # not divisible by 32: maps would not double exactly


def test_export_records_the_rewrite_and_can_skip_it(bundle_factory, tmp_path, capsys):
    out = tmp_path / "plain"
    code, _, err = pocus_here(["export", "unet-resnet50", "--target", "onnx", "--image-size", "64", "--out", out,
                               "--no-fold-upsample", "--quiet"], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target_options"]["decoder_upsample_folded_blocks"] == 0
    folded = json.loads((bundle_factory("onnx", "fp32") / "manifest.json").read_text())
    assert folded["flops"] < 0.92 * manifest["flops"]  # the manifest counts what the bundle executes
    assert manifest["parity"]["status"] == "passed"


def test_forcing_the_fold_on_tflite_int8_is_refused(tmp_path, phantom_dir):
    with pytest.raises(ConfigError, match="cannot convert the folded decoder"):
        export("unet-resnet50", "tflite", "int8", tmp_path / "b", image_size=64, calib_data=phantom_dir,
               fold_upsampling=True)
    assert not (tmp_path / "b").exists()
