"""Fine-tuning models: the task head on an encoder initialised randomly or from a `pocus distill` student,
optionally frozen (linear probe), and the checkpoint card that `pocus-export` reads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..models.encoder_io import load_encoder_state, save_encoder
from ..models.tasks import build_task_model


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


def build_finetune_model(task: str, architecture: str, encoder: str, num_classes: int,
                         linear_probe: bool) -> tuple[FinetuneModel, str]:
    """(model, description of the encoder's origin) for ENC = 'random' or a .safetensors encoder file."""
    net = build_task_model(task, architecture, num_classes)
    enc = net.encoder
    origin = f"random ({architecture})"
    if encoder != "random":
        path = Path(encoder)
        state, card = load_encoder_state(path)
        if card.get("architecture", architecture) != architecture:
            raise CheckpointError(
                f"{path}: encoder is {card.get('architecture')}, but --architecture is {architecture}")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        # compare keys and shapes ourselves: smp's encoders override load_state_dict and return nothing
        expected = {k: tuple(v.shape) for k, v in enc.state_dict().items() if not k.startswith("fc.")}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        misshaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
        if missing or unexpected or misshaped:
            raise CheckpointError(f"{path}: encoder weights do not fit {architecture} ({len(missing)} missing, "
                                  f"e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; "
                                  f"{len(misshaped)} of another shape, e.g. {misshaped[:3]})")
        enc.load_state_dict(state, strict=False)
        origin = f"{path} (sha256 {card['weights_sha256'][:12]})"
    return FinetuneModel(net, enc, linear_probe), origin


def save_task_model(path: Path, net: nn.Module, cfg, labels: list[str], origin: str) -> dict:
    """model.safetensors + model.json card (kind task_model): all pocus-export needs."""
    return save_encoder(path, net, cfg.architecture, cfg.image_size, {
        "kind": "task_model", "task": cfg.task, "name": f"{'unet' if cfg.task == 'segmentation' else 'classifier'}-"
        f"{cfg.architecture}", "encoder": cfg.architecture, "num_classes": len(labels) if cfg.task ==
        "classification" else 1, "labels": labels, "threshold": 0.5 if cfg.task == "segmentation" else None,
        "encoder_origin": origin, "linear_probe": cfg.linear_probe, "label_fraction": cfg.label_fraction})
