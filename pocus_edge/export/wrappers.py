"""Model rewrites applied before conversion: raw-pixel input folding and the smoke-model head calibration.

`fold_raw_input` makes a model take 1-channel pixels in [0, 255]: gray->RGB replication and ImageNet
mean/std normalisation are folded into the first 3-channel convolution. Zero padding of the original
(normalised) input is reproduced exactly by a constant per-position bias map, so the folded model equals
`model(normalize(p / 255))` up to float rounding, borders included.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .base import ExportError


class FoldedInputConv(nn.Module):
    """conv(normalize(replicate(p))) computed as conv(p; W') + bias_map, exactly."""

    def __init__(self, conv: nn.Conv2d, mean, std, pixel_scale: float, image_size: tuple[int, int]):
        super().__init__()
        w = conv.weight.detach()
        a = torch.tensor([pixel_scale / s for s in std], dtype=w.dtype).view(1, 3, 1, 1)
        b = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=w.dtype).view(1, 3, 1, 1)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.weight = nn.Parameter((w * a).sum(dim=1, keepdim=True), requires_grad=False)
        offset = b.expand(1, 3, *image_size)
        bias_map = F.conv2d(offset, w, None, conv.stride, conv.padding, conv.dilation)
        if conv.bias is not None:
            bias_map = bias_map + conv.bias.detach().view(1, -1, 1, 1)
        self.register_buffer("bias_map", bias_map.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation) + self.bias_map


def _first_rgb_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            parent_name, _, child = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, child, module
    raise ExportError("--raw-input: the model has no 3-channel input convolution to fold the pre-processing into; "
                      "export without --raw-input (the runtime then normalises the frames)")


def fold_raw_input(model: nn.Module, mean, std, image_size: int, pixel_scale: float = 1 / 255) -> nn.Module:
    """A copy of `model` taking B x 1 x S x S raw pixels (0..255) instead of normalised RGB."""
    if getattr(model.__class__, "groups", 1) != 1:
        raise ExportError("--raw-input: the model's first convolution is grouped and cannot take the folded "
                          "pre-processing; export without --raw-input")
    folded = copy.deepcopy(model).eval()
    parent, child, conv = _first_rgb_conv(folded)
    if conv.groups != 1 or conv.padding_mode != "zeros":
        raise ExportError(f"--raw-input: the first convolution (groups {conv.groups}, padding {conv.padding_mode!r}) "
                          "is not an ordinary zero-padded one, so folding the normalisation would change the "
                          "borders; export without --raw-input")
    setattr(parent, child, FoldedInputConv(conv, mean, std, pixel_scale, (image_size, image_size)))
    return folded


@torch.no_grad()
def calibrate_smoke_head(model: nn.Module, task: str, images: torch.Tensor) -> nn.Module:
    """Scale and shift a random model's last layer so its outputs spread around the decision point.

    Only for built-in smoke-test models: a random U-Net's logits sit in a narrow band on one side of 0,
    so its mask would be all empty and mask agreement would be trivially perfect. First the BatchNorm
    statistics are re-estimated on the images (data-dependent init): without it a random ResNet maps
    every frame to nearly the same features, and parity on it would measure noise.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over this one pass
    model.train()
    model(images)
    model.eval()
    if task == "segmentation":
        head = model.segmentation_head[0]
        logits = model(images)
        spread = logits.std().clamp_min(1e-6)
        head.weight.mul_(2.0 / spread)
        head.bias.mul_(2.0 / spread)
        head.bias.sub_(model(images).median())
    elif task == "classification":
        logits = model(images)
        gain = 2.0 / (logits - logits.mean(dim=0)).std().clamp_min(1e-6)  # spread images apart, not classes
        model.head.weight.mul_(gain)
        model.head.bias.mul_(gain)
        model.head.bias.sub_(model(images).mean(dim=0))
    return model
