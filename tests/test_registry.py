"""The model registry: every listed architecture builds for each task, and a distilled student of the same
architecture initialises it exactly (every encoder weight copied, none silently dropped)."""

import pytest
import torch

from pocus_edge.errors import CheckpointError, ConfigError
from pocus_edge.finetune.model import build_finetune_model, resolve_architecture
from pocus_edge.models.encoder_io import save_encoder
from pocus_edge.models.registry import (
    ARCHITECTURES,
    SLIM_DECODER,
    builtin_models,
    canonical_arch,
    create_model,
    parse_decoder_channels,
)
from pocus_edge.models.student import build_student

ARCHS = list(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task,num_classes,shape", [("segmentation", 1, (2, 1, 64, 64)),
                                                   ("classification", 3, (2, 3))])
def test_every_architecture_builds_and_runs(arch, task, num_classes, shape):
    model = create_model(task, arch, num_classes).eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(2, 3, 64, 64)).shape) == shape


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_distilled_student_initialises_the_task_model_of_the_same_architecture(tmp_path, arch, task):
    torch.manual_seed(1)
    student = build_student(arch)
    save_encoder(tmp_path / "student.safetensors", student, arch, 64, {"origin": "test", "smoke_test_only": True})
    assert resolve_architecture(str(tmp_path / "student.safetensors"), None) == arch
    model, init = build_finetune_model(task, arch, str(tmp_path / "student.safetensors"),
                                       1 if task == "segmentation" else 3, False)
    assert init["smoke_test_only"] is True and init["init_sha256"]
    prefix = ARCHITECTURES[arch].smp_key_prefix if task == "segmentation" else ""
    loaded = model.net.encoder.state_dict()
    copied = 0
    for key, value in student.state_dict().items():
        if (prefix + key) in loaded:
            assert torch.equal(loaded[prefix + key], value), key
            copied += 1
        else:  # only the timm head layers the U-Net does not use may be left out
            assert task == "segmentation" and key.startswith(ARCHITECTURES[arch].unused_head_keys), key
    assert copied == len([k for k in loaded if not k.startswith("fc.")])


def test_unknown_architecture_gets_did_you_mean_and_the_list():
    with pytest.raises(ConfigError, match=r"Did you mean 'mobilenetv3_large_100'.*efficientnet_b0"):
        canonical_arch("mobilenetv3_large")
    assert canonical_arch("tu-mobilenetv3_large_100") == "mobilenetv3_large_100"


def test_architecture_mismatch_with_the_encoder_card_is_refused(tmp_path):
    save_encoder(tmp_path / "s.safetensors", build_student("resnet18"), "resnet18", 64, {})
    with pytest.raises(CheckpointError, match="encoder is resnet18, but --architecture is mobilenetv3_small_100"):
        resolve_architecture(str(tmp_path / "s.safetensors"), "mobilenetv3_small_100")


def test_decoder_channels_default_slim_for_phone_class_and_settable():
    assert parse_decoder_channels("auto") is None
    assert parse_decoder_channels("64,32,16,8,8") == (64, 32, 16, 8, 8)
    with pytest.raises(ConfigError, match="five widths"):
        parse_decoder_channels("64,32")
    slim = create_model("segmentation", "mobilenetv3_large_100")
    wide = create_model("segmentation", "mobilenetv3_large_100", decoder_channels=(256, 128, 64, 32, 16))
    n = lambda m: sum(p.numel() for p in m.decoder.parameters())  # noqa: E731
    assert n(slim) < n(wide) / 4
    assert slim.segmentation_head[0].in_channels == SLIM_DECODER[-1]


def test_builtin_smoke_names_come_from_the_registry():
    names = builtin_models()
    assert names["unet-resnet50"] == ("segmentation", "resnet50")
    assert names["classifier-efficientnet_b0"] == ("classification", "efficientnet_b0")
    assert len(names) == 3 * len(ARCHITECTURES)
