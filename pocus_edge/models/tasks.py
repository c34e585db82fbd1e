"""Task model parts: classifier and embedding heads on a timm CNN, and the TaskSpec an export needs.

The models themselves are built by `registry.create_model` (smp U-Net for segmentation).

- segmentation: smp `Unet(encoder_name, encoder_weights=None, classes=K)`; K = 1 gives sigmoid mask logits.
- classification: encoder -> global average pool -> linear (logits).
- embedding: encoder -> global average pool -> L2 normalisation.
`TaskSpec` is what the exporter needs to know about a model besides its weights (task, labels, size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..runtime.postprocess import DEFAULT_THRESHOLD


@dataclass
class TaskSpec:
    """Everything besides the weights that a bundle's manifest needs."""

    name: str
    task: str
    encoder: str
    labels: list[str]
    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float | None = DEFAULT_THRESHOLD  # a checkpoint's comes from its card (encoder_io.card_threshold)
    source: str = "built-in"
    source_sha256: str | None = None
    extra: dict = field(default_factory=dict)


class Classifier(nn.Module):
    """timm CNN encoder + global average pooling + linear head -> class logits."""

    def __init__(self, encoder: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EmbeddingModel(nn.Module):
    """timm CNN encoder + global average pooling + L2 normalisation -> unit embedding."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder.forward_features(x).mean(dim=(2, 3)), dim=1)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-degenerate random affine and running statistics.

    timm zero-initialises the last BN gamma of each residual block, so a fresh "random" ResNet has dead
    branches that exporters fold away; parity on such a model would prove nothing. Those gammas become
    small (0.05-0.2) rather than zero, others 0.3-0.8: the branches are live but the network stays close
    to its identity paths, so it is not chaotic (a chaotic random net turns fp16 rounding into noise).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                lo, hi = (0.05, 0.2) if bool((m.weight == 0).all()) else (0.3, 0.8)
                m.weight.copy_(lo + (hi - lo) * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model
