"""ViT-LoRA teacher: every bad option or backbone is refused with a message naming the flag and the fix, before OUT
is made; a checkpoint whose backbone moved is found beside it, any other backbone is refused (issue 14, section 2).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from pocus_edge import cli
from pocus_edge.data.phantoms import write_phantom_dataset
from pocus_edge.errors import CheckpointError, ConfigError
from pocus_edge.finetune.train import FinetuneConfig, run_finetune
from pocus_edge.models.registry import load_task_model
from pocus_edge.models.vit_lora import _timm_vit

ARCH = "vit_small_patch16_dinov3"
TINY = {"depth": 1, "embed_dim": 48, "num_heads": 2}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit_bad")
    data = write_phantom_dataset(root / "ph", 16, size=(64, 64), seed=2)
    vit = _timm_vit(ARCH, 64, dict(TINY))
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(root / "backbone.safetensors"))
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(root / "resnet.safetensors"))
    (root / "notes.safetensors").write_text("not weights")
    student = root / "student.safetensors"
    save_file({"x": torch.zeros(1)}, str(student))
    (root / "student.json").write_text(json.dumps({"kind": "encoder", "architecture": "resnet18"}))
    return root, data


BAD_OPTIONS = [
    ({"architecture": "resnet18", "backbone_weights": "random"}, ConfigError,
     "--backbone-weights: for the ViT-LoRA architectures only"),
    ({"architecture": "resnet18", "lora_rank": 4}, ConfigError, "--lora-rank: for the ViT-LoRA architectures only"),
    ({"architecture": ARCH}, ConfigError, f"--architecture {ARCH} needs --backbone-weights FILE"),
    ({"architecture": "vit_base_patch16_dinov", "backbone_weights": "random"}, ConfigError,
     "Did you mean 'vit_base_patch16_dinov3'"),
    ({"architecture": ARCH, "backbone_weights": "random", "lora_rank": 0}, ConfigError, "--lora-rank 0: must be"),
    ({"architecture": ARCH, "backbone_weights": "random", "lora_rank": 49}, ConfigError,
     r"--lora-rank 49: must be an integer from 1 to the ViT's width \(48\)"),
    ({"architecture": ARCH, "backbone_weights": "random", "lora_alpha": -1.0}, ConfigError, "--lora-alpha -1.0"),
    ({"architecture": ARCH, "backbone_weights": "random", "lora_alpha": float("nan")}, ConfigError, "--lora-alpha nan"),
    ({"architecture": ARCH, "backbone_weights": "{root}/missing.safetensors"}, CheckpointError,
     "--backbone-weights .*missing.safetensors: no such file"),
    ({"architecture": ARCH, "backbone_weights": "{root}/resnet.safetensors"}, CheckpointError,
     f"--backbone-weights .*resnet.safetensors does not match --architecture {ARCH}"),
    ({"architecture": ARCH, "backbone_weights": "{root}/notes.safetensors"}, CheckpointError,
     "--backbone-weights .*notes.safetensors: cannot read it"),
    ({"architecture": ARCH, "backbone_weights": "random", "encoder": "{root}/student.safetensors"}, CheckpointError,
     f"encoder is resnet18, but --architecture is {ARCH}"),
    ({"architecture": ARCH, "backbone_weights": "random", "backbone_kwargs": {"depth": "two"}}, ConfigError,
     "timm cannot build it"),
]


@pytest.mark.parametrize(("overrides", "error", "message"), BAD_OPTIONS)
def test_bad_vit_lora_options_are_refused_before_out_is_made(files, tmp_path, overrides, error, message):
    root, data = files
    values = {"backbone_kwargs": dict(TINY), **{k: v.format(root=root) if isinstance(v, str) else v
                                               for k, v in overrides.items()}}
    cfg = FinetuneConfig(task="segmentation", data=str(data), out=str(tmp_path / "out"), epochs=1, image_size=64,
                         batch_size=4, max_steps_per_epoch=1, threads=1, **values)
    with pytest.raises(error, match=message):
        run_finetune(cfg)
    assert not (tmp_path / "out").exists()


def test_the_cli_says_which_flag_is_wrong(files, tmp_path, capsys):
    root, data = files
    with pytest.raises(SystemExit) as info:
        cli._run(cli.app, ["finetune", "seg", "--data", str(data), "--out", str(tmp_path / "o"), "--architecture",
                           "resnet18", "--backbone-weights", "random"], prog_name="pocus")
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: --backbone-weights: for the ViT-LoRA"), err


def test_kd_refuses_a_vit_student():
    from pocus_edge.models.registry import canonical_arch

    with pytest.raises(ConfigError, match="--student 'vit_base_patch16_dinov3' is not a supported architecture"):
        canonical_arch("vit_base_patch16_dinov3", "--student")


@pytest.fixture(scope="module")
def checkpoint(files, tmp_path_factory):
    root, data = files
    out = tmp_path_factory.mktemp("vit_ckpt") / "run"
    run_finetune(FinetuneConfig(task="segmentation", data=str(data), out=str(out), architecture=ARCH, epochs=1,
                                image_size=64, batch_size=4, max_steps_per_epoch=1, threads=1,
                                backbone_weights=str(root / "backbone.safetensors"), backbone_kwargs=dict(TINY),
                                lora_rank=2))
    return out


def test_a_vit_lora_checkpoint_does_not_initialise_another_run(files, checkpoint, tmp_path):
    root, data = files
    cfg = FinetuneConfig(task="segmentation", data=str(data), out=str(tmp_path / "out"), epochs=1, image_size=64,
                         encoder=str(checkpoint / "model.safetensors"), backbone_weights="random",
                         backbone_kwargs=dict(TINY))
    with pytest.raises(ConfigError, match="starts from --backbone-weights .* drop --encoder"):
        run_finetune(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda card: card.pop("backbone"), "card does not describe a ViT-LoRA model .*'backbone'"),
    (lambda card: card["lora"].update(rank="eight"), "card does not describe a ViT-LoRA model"),
    (lambda card: card["backbone"].update(weights="/nowhere/else.safetensors", name="else.safetensors"),
     "its backbone /nowhere/else.safetensors is not found; pass --backbone-weights FILE .* or copy that file next"),
    (lambda card: card["lora"].update(rank=3), "adapters and head do not fit the model its card describes"),
])
def test_a_broken_vit_lora_card_is_refused(checkpoint, tmp_path, edit, message):
    from pocus_edge.io import sha256_file

    shutil.copy(checkpoint / "model.safetensors", tmp_path / "model.safetensors")
    card = json.loads((checkpoint / "model.json").read_text())
    edit(card)
    card["weights_sha256"] = sha256_file(tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=message):
        load_task_model(tmp_path / "model.safetensors")


def test_a_moved_backbone_is_found_beside_the_checkpoint_and_verified(files, checkpoint, tmp_path):
    root, _ = files
    for name in ("model.safetensors", "model.json"):
        shutil.copy(checkpoint / name, tmp_path / name)
    card = json.loads((tmp_path / "model.json").read_text())
    card["backbone"]["weights"] = "/moved/away/backbone.safetensors"
    (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="is not found"):
        load_task_model(tmp_path / "model.safetensors")
    shutil.copy(root / "backbone.safetensors", tmp_path / "backbone.safetensors")
    model, _ = load_task_model(tmp_path / "model.safetensors")  # the file beside it has the recorded sha256
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    (tmp_path / "backbone.safetensors").write_bytes((root / "resnet.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="is not the backbone this checkpoint was trained on"):
        load_task_model(tmp_path / "model.safetensors")
