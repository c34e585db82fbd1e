"""ViT teacher with LoRA (issue 14, section 2): only adapters + head train, adapters touch only the q and v slices,
merging changes nothing (<= 1e-5), the checkpoint holds only adapters + head tied to the backbone by sha256, a tiny
finetune exports to ONNX and runs in the runtime, and the model serves as a `pocus kd` teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pocus_edge.data.phantoms import write_phantom_dataset
from pocus_edge.finetune.train import FinetuneConfig, run_finetune
from pocus_edge.models.lora import LoRAConfig, LoRAQKV, inject_lora, merge_lora
from pocus_edge.models.registry import create_model, load_task_model
from pocus_edge.models.vit_lora import ViTLoRAOptions, ViTTaskModel, _timm_vit

ARCH = "vit_small_patch16_dinov3"
TINY = {"depth": 2, "embed_dim": 48, "num_heads": 2}  # as conftest.TINY_TEACHER, two blocks
SIZE = 64


def _model(task: str = "segmentation", weights: str = "random", num_classes: int = 1, rank: int = 4,
           arch: str = ARCH) -> ViTTaskModel:
    return create_model(task, arch, num_classes, vit=ViTLoRAOptions(weights, SIZE, rank, None, dict(TINY))).eval()


def _randomise_adapters(model: torch.nn.Module, seed: int = 0) -> None:
    """B is zero at init (the model starts as the backbone); give it values so the adapters act."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRAQKV):
                for b in module.lora_B.values():
                    b.weight.copy_(0.5 * torch.randn(b.weight.shape, generator=g))


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_only_adapters_and_head_are_trainable(task):
    model = _model(task, num_classes=1 if task == "segmentation" else 3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"encoder.blocks.{i}.attn.qkv.lora_{m}.{t}.weight" for i in range(2) for m in "AB" for t in "qv"}
    assert trainable - expected and all(n.startswith("head.") for n in trainable - expected)
    assert expected <= trainable
    backbone = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert len(backbone) > 20  # the whole ViT is frozen
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.encoder.training and model.head.training  # the frozen backbone stays in eval mode
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(2, 3, SIZE, SIZE)).square().mean().backward()
        optimizer.step()
    assert all(torch.equal(p, backbone[n]) for n, p in model.named_parameters() if n in backbone)
    b_weights = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert all(p.abs().sum() > 0 for p in b_weights)  # the adapters did train


def test_adapters_touch_only_the_q_and_v_slices_with_alpha_over_rank():
    torch.manual_seed(0)
    base = torch.nn.Linear(8, 24)
    wrapped = LoRAQKV(base, LoRAConfig(rank=2, alpha=3.0))
    x = torch.randn(5, 8)
    assert torch.equal(wrapped(x), base(x))  # B = 0: exactly the frozen layer
    _randomise_adapters(wrapped)
    a, b = wrapped.lora_A, wrapped.lora_B
    by_hand = torch.cat([x @ a["q"].weight.T @ b["q"].weight.T, torch.zeros(5, 8),
                         x @ a["v"].weight.T @ b["v"].weight.T], dim=1) * 1.5
    assert torch.allclose(wrapped(x), base(x) + by_hand, atol=1e-6)
    assert torch.equal(wrapped(x)[:, 8:16], base(x)[:, 8:16])  # keys untouched
    assert not base.weight.requires_grad and wrapped.lora_A["q"].weight.requires_grad


@pytest.mark.parametrize(("task", "arch"), [("segmentation", ARCH), ("classification", ARCH),
                                            ("segmentation", "vit_small_patch14_dinov2")])
def test_merged_model_is_plain_and_gives_the_same_outputs(task, arch):
    model = _model(task, num_classes=1 if task == "segmentation" else 3, arch=arch)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(x)
        _randomise_adapters(model)
        adapted = model(x)
        merged = merge_lora(model)
        after = merged(x)
    assert (adapted - before).abs().max() > 1e-2  # the adapters change the outputs: the comparison means something
    assert (after - adapted).abs().max() <= 1e-5
    assert not any(isinstance(m, LoRAQKV) for m in merged.modules())
    plain = _timm_vit(arch, SIZE, dict(TINY))
    assert set(merged.encoder.state_dict()) == set(plain.state_dict())  # plain timm layers and key names
    assert any(isinstance(m, LoRAQKV) for m in model.modules())  # merging copies; the original keeps its adapters


def test_lora_refuses_a_qkv_that_would_bypass_it():
    from pocus_edge.errors import ConfigError

    vit = _timm_vit("vit_small_patch16_dinov3_qkvb", SIZE, dict(TINY))  # reads qkv.weight in F.linear itself
    with pytest.raises(ConfigError, match="not \\*_qkvb"):
        inject_lora(vit, LoRAConfig())


def test_random_backbone_is_deterministic_and_its_features_feed_kd():
    torch.manual_seed(1)
    first = _model()
    torch.manual_seed(2)
    second = _model()
    assert first.card_fields["backbone"]["sha256"] == second.card_fields["backbone"]["sha256"]
    frozen = {k: v for k, v in first.state_dict().items() if ".lora_" not in k and not k.startswith("head.")}
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in frozen.items())
    from pocus_edge.kd.models import logits_and_features

    logits, grid = logits_and_features(first, "segmentation", torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, 1, SIZE, SIZE) and grid.shape == (2, 48, SIZE // 16, SIZE // 16)
    tokens = first.encoder.forward_features(torch.zeros(1, 3, SIZE, SIZE))[:, first.encoder.num_prefix_tokens:]
    grid0 = first.features(torch.zeros(1, 3, SIZE, SIZE))
    assert torch.equal(grid0[0, :, 1, 2], tokens[0, 1 * 4 + 2])  # token (row 1, col 2) lands at grid[1, 2]


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("vit") / "ph", 24, size=(SIZE, SIZE), seed=11)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A timm-format weights file of the tiny ViT (what --backbone-weights takes), distinct from `random`."""
    vit = _timm_vit(ARCH, SIZE, dict(TINY))
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.01)
    path = tmp_path_factory.mktemp("backbone") / "dinov3_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, seg_data, backbone_file):
    out = tmp_path_factory.mktemp("run") / "vit"
    cfg = FinetuneConfig(task="segmentation", data=str(seg_data), out=str(out), architecture=ARCH, epochs=1,
                         image_size=SIZE, batch_size=4, max_steps_per_epoch=2, threads=1,
                         backbone_weights=str(backbone_file), backbone_kwargs=dict(TINY), lora_rank=4,
                         warmup_steps=1)
    summary = run_finetune(cfg)
    return out, summary


def test_finetune_checkpoint_holds_only_adapters_head_and_the_backbone_sha(trained, backbone_file):
    from pocus_edge.io import sha256_file

    out, summary = trained
    keys = set(load_file(str(out / "model.safetensors")))
    assert keys and all(".lora_" in k or k.startswith("head.") for k in keys), sorted(keys)[:5]
    assert len([k for k in keys if ".lora_" in k]) == 2 * 2 * 2  # blocks x {q, v} x {A, B}
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "task_model" and card["encoder"] == ARCH and card["smoke_test_only"] is False
    assert card["backbone"]["sha256"] == sha256_file(backbone_file)
    assert card["backbone"]["name"] == backbone_file.name and card["backbone"]["image_size"] == SIZE
    assert card["lora"] == {"target": ["attn.qkv.q", "attn.qkv.v"], "rank": 4, "alpha": 8.0}
    assert card["input_size"] == [SIZE, SIZE] and card["backbone"]["kwargs"] == TINY
    config = (out / "config.yaml").read_text()
    assert "warmup_steps: 1" in config and "lora_alpha: 8.0" in config


def test_checkpoint_reloads_to_the_trained_model_and_refuses_another_backbone(trained, backbone_file, tmp_path):
    from pocus_edge.errors import CheckpointError

    out, _ = trained
    model, card = load_task_model(out / "model.safetensors")
    assert not any(isinstance(m, LoRAQKV) for m in model.modules())  # merged for export and kd
    unmerged = create_model("segmentation", ARCH, 1, vit=ViTLoRAOptions(str(backbone_file), SIZE, 4, None,
                                                                          dict(TINY))).eval()
    unmerged.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (model(x) - unmerged(x)).abs().max() <= 1e-5
    other = tmp_path / "other.safetensors"
    state = load_file(str(backbone_file))
    save_file({k: v + 1e-3 for k, v in state.items()}, str(other))
    with pytest.raises(CheckpointError, match="sha256 .* is not the backbone this checkpoint was trained on"):
        load_task_model(out / "model.safetensors", backbone_weights=str(other))
    with pytest.raises(CheckpointError, match="not a random backbone"):
        load_task_model(out / "model.safetensors", backbone_weights="random")


def test_random_backbone_checkpoint_reloads_and_is_flagged(seg_data, tmp_path, caplog):
    out = tmp_path / "run"
    cfg = FinetuneConfig(task="segmentation", data=str(seg_data), out=str(out), architecture=ARCH, epochs=1,
                         image_size=SIZE, batch_size=4, max_steps_per_epoch=1, threads=1, backbone_weights="random",
                         backbone_kwargs=dict(TINY), lora_rank=2)
    with caplog.at_level("WARNING"):
        run_finetune(cfg)
    assert "smoke tests only" in caplog.text and "never reaches" in caplog.text  # 250 warm-up steps > 1 step
    card = json.loads((out / "model.json").read_text())
    assert card["smoke_test_only"] is True and card["backbone"]["weights"] == "random"
    torch.manual_seed(123)  # the global RNG state must not matter
    model, _ = load_task_model(out / "model.safetensors")
    trained = create_model("segmentation", ARCH, 1, vit=ViTLoRAOptions("random", SIZE, 2, None, dict(TINY))).eval()
    trained.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (model(x) - trained(x)).abs().max() <= 1e-5


def test_vit_lora_checkpoint_exports_to_onnx_and_runs_in_the_runtime(trained, seg_data):
    from pocus_edge import runtime
    from pocus_edge.export import export
    from pocus_edge.export.source import resolve_model

    out, _ = trained
    net, spec = resolve_model(str(out / "model.safetensors"), None)
    assert not any(isinstance(m, LoRAQKV) for m in net.modules()) and spec.image_size == SIZE
    manifest = export(str(out / "model.safetensors"), "onnx", "fp32", out.parent / "bundle", parity_data=seg_data)
    assert manifest["parity"]["status"] == "passed", manifest["parity"]
    predictor = runtime.load(out.parent / "bundle")
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next((seg_data / "images").iterdir())))
    result = predictor(image)
    assert result.mask.shape == image.shape[:2]


def test_vit_lora_checkpoint_is_a_kd_teacher(trained, seg_data, tmp_path):
    from pocus_edge.kd.config import KDConfig
    from pocus_edge.kd.method import TaskKD

    out, _ = trained
    cfg = KDConfig(task="segmentation", teacher_checkpoint=str(out / "model.safetensors"), labeled_data=str(seg_data),
                   data=[str(seg_data)], out=str(tmp_path / "kd"), student="mobilenetv3_small_100",
                   image_size=SIZE, batch_size=4, max_steps=2, num_workers=0, threads=1, quiet=True).validate()
    teacher, student = TaskKD(cfg).build_models(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    method = TaskKD(cfg)
    for _ in range(2):
        loss = method.loss(teacher, student, torch.randn(2, 3, SIZE, SIZE))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and student.projector.out_channels == 48  # the ViT's width
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters())
