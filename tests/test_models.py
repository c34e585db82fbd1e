import pytest
import torch
from conftest import TINY_TEACHER
from safetensors.torch import save_file

from pocus_edge.errors import CheckpointError, ConfigError
from pocus_edge.models.encoder_io import load_encoder_state, save_encoder
from pocus_edge.models.student import DistillStudent, ProjectionHead, build_student, feature_channels
from pocus_edge.models.teacher import build_teacher


@pytest.fixture(scope="module")
def vit_b():
    return build_teacher("vit_base_patch16_dinov3", "random", 256)


@pytest.mark.parametrize("size,grid", [(256, 16), (224, 14)])
def test_token_grids_of_teacher_and_student_align(vit_b, size, grid):
    assert vit_b.grid_size(size) == (grid, grid)
    with torch.no_grad():
        t = vit_b(torch.randn(1, 3, size, size))
    assert t.shape == (1, grid * grid, 2 * 768)  # two blocks, concatenated, patch tokens only
    encoder = build_student("resnet50")
    channels, fmap = feature_channels(encoder, size)
    assert channels == 2048 and fmap == (size // 32, size // 32)  # 8x8 at 256 px
    student = DistillStudent(encoder, ProjectionHead(channels, t.shape[-1], hidden=64), vit_b.grid_size(size))
    with torch.no_grad():
        assert student(torch.randn(1, 3, size, size)).shape == t.shape


def test_teacher_is_frozen_eval_and_blocks_configurable():
    teacher = build_teacher("vit_small_patch16_dinov3", "random", 64, [0, -1], "mean", True, TINY_TEACHER)
    teacher.train()
    assert not teacher.vit.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.blocks == [0, 2] and teacher.out_dim == 48
    with pytest.raises(ConfigError, match="distinct block indices"):
        build_teacher("vit_small_patch16_dinov3", "random", 64, [2, -1], "concat", True, TINY_TEACHER)
    with pytest.raises(ConfigError, match="not a timm model"):
        build_teacher("vit_nonexistent_dinov3", "random", 64)


def test_phone_class_student_distils_to_the_teacher_grid():
    encoder = build_student("mobilenetv3_large_100")
    channels, fmap = feature_channels(encoder, 256)
    assert fmap == (8, 8)
    student = DistillStudent(encoder, ProjectionHead(channels, 96, hidden=32), (16, 16))
    out = student(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 256, 96)
    out.mean().backward()
    assert encoder.conv_stem.weight.grad is not None


def test_distilled_encoder_loads_into_timm_and_smp_unet(tmp_path):
    import segmentation_models_pytorch as smp
    import timm

    encoder = build_student("resnet50")
    save_encoder(tmp_path / "student.safetensors", encoder, "resnet50", 256, {"origin": "test"})
    state, card = load_encoder_state(tmp_path / "student.safetensors")
    assert card["architecture"] == "resnet50" and card["input_size"] == [256, 256]
    timm_model = timm.create_model("resnet50", pretrained=False, num_classes=0)
    result = timm_model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    unet = smp.Unet("resnet50", encoder_weights=None, classes=1)
    assert set(state) == set(unet.encoder.state_dict())  # zero missing, zero unexpected
    unet.encoder.load_state_dict(dict(state), strict=True)
    assert torch.equal(unet.encoder.layer4[2].conv3.weight, encoder.layer4[2].conv3.weight)


def test_encoder_card_hash_detects_a_replaced_file(tmp_path):
    encoder = build_student("resnet18")
    path = tmp_path / "student.safetensors"
    save_encoder(path, encoder, "resnet18", 64, {})
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_encoder_state(path)


def _meta_style(state: dict) -> dict:
    """Rename timm DINOv3 keys back to the names in Meta's released .pth files."""
    out = {}
    for k, v in state.items():
        k = k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma").replace("reg_token", "storage_tokens")
        out[k] = v
    out["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return out


def test_teacher_weights_from_timm_safetensors_and_meta_pth(tmp_path):
    source = build_teacher("vit_small_patch16_dinov3", "random", 64, None, "concat", True, TINY_TEACHER)
    state = source.vit.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "timm.safetensors"))
    torch.save(_meta_style(state), tmp_path / "meta.pth")
    x = torch.randn(1, 3, 64, 64)
    expected = source(x)
    for name in ("timm.safetensors", "meta.pth"):
        loaded = build_teacher("vit_small_patch16_dinov3", str(tmp_path / name), 64, None, "concat", True,
                               TINY_TEACHER)
        assert torch.allclose(loaded(x), expected), name


def test_teacher_weights_mismatch_and_missing_file_are_clear(tmp_path):
    small = build_teacher("vit_small_patch16_dinov3", "random", 64, None, "concat", True, TINY_TEACHER)
    save_file({k: v.contiguous() for k, v in small.vit.state_dict().items()}, str(tmp_path / "small.safetensors"))
    with pytest.raises(CheckpointError, match="does not match --teacher"):
        build_teacher("vit_small_patch16_dinov3", str(tmp_path / "small.safetensors"), 64, None, "concat", True,
                      {"depth": 4, "embed_dim": 48, "num_heads": 2})
    with pytest.raises(CheckpointError, match="no such file"):
        build_teacher("vit_small_patch16_dinov3", str(tmp_path / "nope.pth"), 64, None, "concat", True, TINY_TEACHER)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_teacher("vit_small_patch16_dinov3", str(tmp_path / "junk.pth"), 64, None, "concat", True, TINY_TEACHER)


def test_dinov2_teacher_with_registers_gives_patch_tokens_only():
    teacher = build_teacher("vit_small_patch14_reg4_dinov2", "random", 224, None, "concat", True,
                            {"depth": 2, "embed_dim": 48, "num_heads": 2})
    assert teacher.grid_size(224) == (16, 16)
    assert teacher(torch.randn(1, 3, 224, 224)).shape == (1, 256, 96)  # 4 registers + cls dropped
