"""Fine-tuning models: the task head on an encoder initialised randomly or from a `pocus distill` student,
optionally frozen (linear probe), and the checkpoint card that `pocus-export` reads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..models.encoder_io import load_encoder_state, read_card, save_encoder
from ..models.registry import canonical_arch, create_model, default_decoder_channels, load_student_encoder, task_encoder
from ..models.vit_lora import CheckpointView, ViTLoRAOptions, is_vit_arch
from ..runtime.postprocess import DEFAULT_THRESHOLD


class FinetuneModel(nn.Module):
    """Wraps the task model; in linear-probe mode the encoder stays frozen and in eval mode (BN statistics fixed)."""

    def __init__(self, net: nn.Module, encoder: nn.Module, linear_probe: bool):
        super().__init__()
        self.net = net
        self.encoder = encoder
        self.linear_probe = linear_probe
        if linear_probe:
            for p in encoder.parameters():
                p.requires_grad_(False)

    def train_mode(self) -> None:
        self.train()
        if self.linear_probe:
            self.encoder.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def resolve_architecture(encoder: str, architecture: str | None) -> str:
    """--architecture if given, else the one recorded in the --encoder card, else resnet50."""
    card_arch = None
    if encoder != "random":
        card = read_card(Path(encoder))
        card_arch = card.get("encoder") if card.get("kind") == "task_model" else card.get("architecture")
    if architecture is None:
        return canonical_arch(card_arch or "resnet50", teachers=True)
    arch = canonical_arch(architecture, teachers=True)
    if card_arch is not None and canonical_arch(card_arch, "--encoder", teachers=True) != arch:
        raise CheckpointError(f"{encoder}: encoder is {card_arch}, but --architecture is {architecture}; drop "
                              "--architecture (it is read from the card) or pass the matching one")
    return arch


def build_finetune_model(task: str, architecture: str, encoder: str, num_classes: int, linear_probe: bool,
                         decoder_channels: tuple[int, ...] | None = None, vit: ViTLoRAOptions | None = None
                         ) -> tuple[FinetuneModel, dict]:
    """(model, its initialisation record) for --encoder random | a distilled student | a task checkpoint.

    The record holds `origin` (text), `decoder_channels` (as built), `init_sha256` and `smoke_test_only` (true when
    the initialisation descends from a random-weight teacher, so the flag survives every later step).

    A task checkpoint (e.g. the student of `pocus kd`'s distillation stage) initialises the whole model,
    decoder or head included; it must be the same task, architecture and decoder width.
    A ViT-LoRA architecture starts from `vit.backbone_weights` (frozen) with new adapters and head.
    """
    if is_vit_arch(architecture):
        return _vit_finetune_model(task, architecture, encoder, num_classes, linear_probe, vit)
    if encoder == "random":
        decoder_channels = _decoder(task, architecture, decoder_channels)
        net = create_model(task, architecture, num_classes, decoder_channels)
        return FinetuneModel(net, task_encoder(net), linear_probe), {
            "origin": f"random ({architecture})", "decoder_channels": decoder_channels, "init_sha256": None,
            "smoke_test_only": False}
    path = Path(encoder)
    state, card = load_encoder_state(path)
    if card.get("kind") == "task_model":
        if card.get("task") != task:
            raise CheckpointError(f"{path}: a {card.get('task')} checkpoint cannot initialise a {task} model")
        if card.get("num_classes", num_classes) != num_classes:
            raise CheckpointError(f"{path}: has {card.get('num_classes')} output(s), this data needs {num_classes}")
        decoder_channels = _decoder(task, architecture, decoder_channels or _tuple(card.get("decoder_channels")))
        net = create_model(task, architecture, num_classes, decoder_channels)
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        if expected != {k: tuple(v.shape) for k, v in state.items()}:
            raise CheckpointError(f"{path}: weights do not fit {architecture} with decoder {decoder_channels or 'auto'}"
                                  "; pass the --decoder-channels it was trained with (see its card)")
        net.load_state_dict(state)
    else:
        decoder_channels = _decoder(task, architecture, decoder_channels)
        net = create_model(task, architecture, num_classes, decoder_channels)
        load_student_encoder(net, task, architecture, state, str(path))
    return FinetuneModel(net, task_encoder(net), linear_probe), {
        "origin": f"{path} (sha256 {card['weights_sha256'][:12]})", "decoder_channels": decoder_channels,
        "init_sha256": card["weights_sha256"], "smoke_test_only": bool(card.get("smoke_test_only", False))}


def _vit_finetune_model(task: str, arch: str, encoder: str, num_classes: int, linear_probe: bool,
                        vit: ViTLoRAOptions | None) -> tuple[FinetuneModel, dict]:
    if encoder != "random":
        raise ConfigError(f"--encoder {encoder}: a {arch} model starts from --backbone-weights (frozen) with new "
                          "LoRA adapters and head; drop --encoder")
    net = create_model(task, arch, num_classes, vit=vit)
    backbone, lora = net.card_fields["backbone"], net.card_fields["lora"]
    return FinetuneModel(net, task_encoder(net), linear_probe), {
        "origin": f"{arch} backbone {backbone['name']} (sha256 {backbone['sha256'][:12]}) + LoRA rank {lora['rank']}",
        "decoder_channels": None, "init_sha256": backbone["sha256"], "smoke_test_only": backbone["weights"] == "random",
        "name": f"vit-lora-{'seg' if task == 'segmentation' else 'cls'}-{arch}", "card": net.card_fields}


def _decoder(task: str, arch: str, channels: tuple[int, ...] | None) -> list[int] | None:
    """The decoder widths a segmentation model is built with (None for other tasks)."""
    if task != "segmentation":
        return None
    return list(channels or default_decoder_channels(arch))


def _tuple(value) -> tuple[int, ...] | None:
    return tuple(int(v) for v in value) if value else None


def save_task_model(path: Path, net: nn.Module, cfg, labels: list[str], init: dict, extra: dict | None = None) -> dict:
    """model.safetensors + model.json card (kind task_model): all pocus-export needs (a ViT-LoRA model: only its
    adapters and head, with the backbone record from `init['card']`)."""
    saved = CheckpointView(net) if is_vit_arch(cfg.architecture) else net
    name = init.get("name") or f"{'unet' if cfg.task == 'segmentation' else 'classifier'}-{cfg.architecture}"
    return save_encoder(path, saved, cfg.architecture, cfg.image_size, {**(extra or {}), **init.get("card", {}),
        "kind": "task_model", "task": cfg.task, "name": name, "encoder": cfg.architecture,
        "num_classes": len(labels) if cfg.task == "classification" else 1, "labels": labels,
        "threshold": DEFAULT_THRESHOLD if cfg.task == "segmentation" else None,
        "encoder_origin": init["origin"], "init_sha256": init["init_sha256"],
        "decoder_channels": init["decoder_channels"], "smoke_test_only": init["smoke_test_only"],
        "linear_probe": cfg.linear_probe, "label_fraction": cfg.label_fraction})
