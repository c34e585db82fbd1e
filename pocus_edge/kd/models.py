"""Teacher and student wrappers that expose what TS-KD aligns: (logits, last encoder feature map).

segmentation (smp U-Net): features = encoder(x); logits = head(decoder(features)); the map is features[-1].
classification (Classifier): map = encoder.forward_features(x); logits = head(mean over the map).
The student adds a 1x1 projector from its deepest stage to the teacher's channels (TS-KD's hidden-layer alignment).
"""

from __future__ import annotations

import torch
from torch import nn


def logits_and_features(net: nn.Module, task: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of a registry task model returning (logits, deepest encoder map B x C x h x w)."""
    if hasattr(net, "logits_and_features"):  # a ViT-LoRA teacher: last block's patch tokens as a grid
        return net.logits_and_features(x)
    if task == "segmentation":
        features = net.encoder(x)
        return net.segmentation_head(net.decoder(features)), features[-1]
    fmap = net.encoder.forward_features(x)
    return net.head(fmap.mean(dim=(2, 3))), fmap


def output_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Logits as B x N x C tokens (N = pixels for masks, 1 for class logits), for the held-out R²."""
    return logits.flatten(2).transpose(1, 2) if logits.ndim == 4 else logits.unsqueeze(1)


class FrozenTeacher(nn.Module):
    """A fine-tuned task model, frozen and always in eval mode (its BatchNorm statistics never move)."""

    def __init__(self, net: nn.Module, task: str):
        super().__init__()
        self.net, self.task = net.eval(), task
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_features(self.net, self.task, x)


class KDStudent(nn.Module):
    """Student task model + 1x1 projector of its deepest stage to the teacher's feature channels."""

    def __init__(self, net: nn.Module, task: str, student_channels: int, teacher_channels: int):
        super().__init__()
        self.net, self.task = net, task
        self.projector = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, fmap = logits_and_features(self.net, self.task, x)
        return logits, self.projector(fmap)


@torch.no_grad()
def feature_channels(net: nn.Module, task: str, image_size: int) -> int:
    """Channels of a task model's deepest encoder map (found by a dry run, so any registry encoder works)."""
    was_training = net.training
    net.eval()
    _, fmap = logits_and_features(net, task, torch.zeros(1, 3, image_size, image_size))
    net.train(was_training)
    return int(fmap.shape[1])
