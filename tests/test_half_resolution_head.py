"""Four decoder widths = a U-Net whose head works at 1/2 resolution (the phone-class speed option of
benchmarks/kd/speed/): built, saved, reloaded, distilled into and exported like any other model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pocus_edge.errors import ConfigError
from pocus_edge.models.encoder_io import save_encoder
from pocus_edge.models.registry import create_model, load_task_model, parse_decoder_channels
from pocus_edge.models.tasks import randomize_batchnorm

HALF = (48, 32, 24, 16)


def test_four_widths_parse_and_three_are_refused():
    assert parse_decoder_channels("48,32,24,16") == HALF
    with pytest.raises(ConfigError, match="four or five widths"):
        parse_decoder_channels("48,32,24")


@pytest.mark.parametrize("size", [64, 96])
def test_half_resolution_head_keeps_the_input_size_and_drops_the_last_stage(size):
    half = create_model("segmentation", "mobilenetv4_conv_small", 1, HALF).eval()
    full = create_model("segmentation", "mobilenetv4_conv_small", 1, (*HALF, 8)).eval()
    with torch.no_grad():
        assert half(torch.randn(2, 3, size, size)).shape == (2, 1, size, size)
    assert not list(half.decoder.blocks[-1].parameters())
    assert half.segmentation_head[0].in_channels == HALF[-1]
    upsample = half.segmentation_head[1]
    assert upsample.mode == "bilinear" and upsample.align_corners is False and upsample.scale_factor == 2
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters())


def test_upsampling_uses_half_pixel_centres_like_the_runtime():
    """A step edge in the half-resolution logits lands where the runtime's own bilinear resize puts it."""
    from pocus_edge.runtime.preprocess import resize_bilinear

    half = create_model("segmentation", "mobilenetv4_conv_small", 1, HALF).eval()
    logits = torch.zeros(1, 1, 8, 8)
    logits[..., 3:6, 2:7] = 1.0
    ours = half.segmentation_head[1](logits)[0, 0].numpy()
    runtime = resize_bilinear(logits[0, 0].numpy(), 16, 16)
    assert np.abs(ours - runtime).max() < 1e-5


def _checkpoint(path, arch="mobilenetv4_conv_small", widths=HALF):
    torch.manual_seed(0)
    net = randomize_batchnorm(create_model("segmentation", arch, 1, widths), seed=0)
    save_encoder(path, net, arch, 64, {
        "kind": "task_model", "task": "segmentation", "encoder": arch, "num_classes": 1,
        "labels": ["background", "lesion"], "threshold": 0.5, "smoke_test_only": True,
        "decoder_channels": list(widths)})
    return net


def test_card_with_four_widths_reloads_exports_and_runs(tmp_path, phantom_dir):
    import pocus_edge.runtime as rt
    from pocus_edge.export import export

    net = _checkpoint(tmp_path / "model.safetensors")
    model, card = load_task_model(tmp_path / "model.safetensors")
    assert card["decoder_channels"] == list(HALF)
    saved, loaded = net.state_dict(), model.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    manifest = export(str(tmp_path / "model.safetensors"), "onnx", "fp32", tmp_path / "b", image_size=64,
                      parity_data=phantom_dir)
    assert manifest["parity"]["status"] == "passed"
    frame = (np.add.outer(np.arange(80), np.arange(72)) % 256).astype(np.uint8)
    assert rt.load(tmp_path / "b")(frame).mask.shape == frame.shape


def test_kd_student_with_a_half_resolution_head_matches_the_teacher_output(tmp_path):
    from pocus_edge.data.phantoms import write_phantom_dataset
    from pocus_edge.kd.config import KDConfig
    from pocus_edge.kd.method import TaskKD

    labeled = write_phantom_dataset(tmp_path / "labeled", 16, size=(64, 64), seed=5)
    _checkpoint(tmp_path / "teacher.safetensors", "resnet18", (64, 32, 16, 8, 8))
    cfg = KDConfig(task="segmentation", teacher_checkpoint=str(tmp_path / "teacher.safetensors"),
                   labeled_data=str(labeled), data=[str(labeled)], out=str(tmp_path / "run"),
                   student="mobilenetv4_conv_small", decoder_channels=list(HALF), image_size=64, batch_size=4,
                   max_steps=1, num_workers=0, threads=1, quiet=True).validate()
    teacher, student = TaskKD(cfg).build_models(cfg, torch.device("cpu"))
    loss = TaskKD(cfg).loss(teacher, student, torch.randn(2, 3, 64, 64))
    assert torch.isfinite(loss)
    loss.backward()
    assert student.net.segmentation_head[0].weight.grad is not None
