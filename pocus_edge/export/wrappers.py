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
