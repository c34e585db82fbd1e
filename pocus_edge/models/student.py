"""The CNN student and its token-wise projection head.

Contract: `build_student(name)` returns a timm CNN created with `num_classes=0, global_pool=''`, so its
state dict uses timm's own key names (for ResNets: conv1, bn1, layer1..4, which smp's ResNet encoders
share) and `forward_features` gives the final B x C x S/32 x S/32 map (8 x 8 at 256 px).
`DistillStudent` = student -> 2-layer 1x1-conv MLP (GELU, hidden 4096) -> bilinear resize to the
teacher's token grid -> B x N x D tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def build_student(name: str) -> nn.Module:
    """Create a randomly initialised timm CNN (timm's own init) whose forward_features gives a 4-D map."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"--student {name!r} is not a timm model (e.g. resnet50, resnet18, mobilenetv3_large_100)")
    model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    if not hasattr(model, "forward_features"):
        raise ConfigError(f"--student {name!r} has no forward_features; choose a timm CNN")
    return model


def feature_channels(student: nn.Module, image_size: int) -> tuple[int, tuple[int, int]]:
    """Channels and spatial size of the student's final feature map at this input size."""
    was_training = student.training
    student.eval()
    with torch.no_grad():
        out = student.forward_features(torch.zeros(1, 3, image_size, image_size))
    student.train(was_training)
    if out.ndim != 4:
        raise ConfigError(
            f"student returns a {out.ndim}-D feature tensor, not a B x C x H x W map; choose a CNN (e.g. resnet50)"
        )
    return int(out.shape[1]), (int(out.shape[2]), int(out.shape[3]))


class ProjectionHead(nn.Module):
    """Token-wise 2-layer MLP as 1x1 convolutions: C -> hidden -> D with GELU between."""

    def __init__(self, in_channels: int, out_dim: int, hidden: int = 4096):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DistillStudent(nn.Module):
    """Student encoder + projection head, producing tokens aligned with the teacher's grid."""

    def __init__(self, encoder: nn.Module, head: ProjectionHead, grid: tuple[int, int]):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.grid = tuple(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(self.encoder.forward_features(x))
        if tuple(z.shape[-2:]) != self.grid:
            z = F.interpolate(z, size=self.grid, mode="bilinear", align_corners=False)
        return z.flatten(2).transpose(1, 2)
