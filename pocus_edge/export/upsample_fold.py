"""Exact rewrite of the U-Net decoder: nearest 2x upsampling folded into the 3x3 convolution after it.

A 3x3 convolution over a nearest-upsampled map touches only 2x2 distinct source pixels per output
pixel. Each of the four output phases (row parity a, column parity b) is therefore a 2x2 convolution
on the low-resolution map, with kernel B_a W B_b^T (sums of the original taps), followed by a pixel
shuffle. The upsampled branch then costs 16/36 of the multiply-adds; U-Net-ResNet50 at 256 px drops
from 21.3 to 18.9 GFLOP (-11 %) with the default MIN_CHANNELS. The skip branch of the concatenation
keeps its own 3x3 convolution and BatchNorm is folded into both, so the block equals smp's
`UnetDecoderBlock` up to float rounding, borders included (zero padding of the upsampled map is zero
padding of the source). Applied at export only, to blocks that upsample nearest by exactly 2 (always
the case for image sizes divisible by 32).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# Rows of B_a pick which of the three kernel taps act on source offsets (a - 1 + t), t = 0, 1.
_PHASE_TAPS = (
    torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),  # even output row/column: offsets -1, 0
    torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # odd output row/column: offsets 0, +1
)


# Blocks with fewer upsampled input channels are left alone: their saving is smaller than the cost of
# the pixel shuffle on their large maps (ONNX Runtime profile, benchmarks/export/README.md).
MIN_CHANNELS = 64


def _folded_conv_bn(conv: nn.Conv2d, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv followed by eval-mode BatchNorm, as one convolution."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if isinstance(bn, nn.BatchNorm2d):
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * scale.view(-1, 1, 1, 1)
        b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w, b


def phase_kernels(weight: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """(Cout, Cin, 3, 3) kernel of conv3x3(up2(x)) -> the (Cout, Cin, 2, 2) kernel of each output phase (a, b)."""
    return {(a, b): torch.einsum("rk,oikl,sl->oirs", _PHASE_TAPS[a].to(weight), weight, _PHASE_TAPS[b].to(weight))
            for a in (0, 1) for b in (0, 1)}


# Zero padding (left, right, top, bottom) that puts phase (a, b)'s 2x2 window on source offsets a - 1 + t.
_PHASE_PADS = {(a, b): (1 - b, b, 1 - a, a) for a in (0, 1) for b in (0, 1)}


class UpsampledConv3x3(nn.Module):
    """conv3x3(nearest_up2(x), padding=1) computed as four 2x2 phase convolutions and a pixel shuffle."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        for (a, b), kernel in phase_kernels(weight).items():
            self.register_buffer(f"weight_{a}{b}", kernel.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phases = [F.conv2d(F.pad(x, _PHASE_PADS[a, b]), getattr(self, f"weight_{a}{b}"))
                  for a in (0, 1) for b in (0, 1)]
        return F.pixel_shuffle(torch.stack(phases, dim=2).flatten(1, 2), 2)  # channel 4c + 2a + b -> (2i+a, 2j+b)


class FoldedUpsampleDecoderBlock(nn.Module):
    """smp UnetDecoderBlock (nearest 2x, no attention) with the upsampling folded into conv1."""

    def __init__(self, block: nn.Module, skip_channels: int):
        super().__init__()
        conv, norm = block.conv1[0], block.conv1[1] if len(block.conv1) > 1 else None
        weight, bias = _folded_conv_bn(conv, norm)
        up_channels = conv.in_channels - skip_channels
        self.up = UpsampledConv3x3(weight[:, :up_channels]).float()  # phase sums taken in float64
        self.register_buffer("skip_weight", weight[:, up_channels:].float().contiguous())
        self.register_buffer("bias", bias.float().contiguous())
        self.conv2 = block.conv2
        self.attention2 = block.attention2

    def forward(self, feature_map: torch.Tensor, target_height: int, target_width: int,
                skip_connection: torch.Tensor | None = None) -> torch.Tensor:
        if skip_connection is not None:  # bias inside the skip conv: ONNX Runtime fuses conv + add + relu
            y = F.conv2d(skip_connection, self.skip_weight, self.bias, padding=1) + self.up(feature_map)
        else:
            y = self.up(feature_map) + self.bias.view(1, -1, 1, 1)
        y = F.relu(y)
        return self.attention2(self.conv2(y))


def _foldable(block: nn.Module) -> bool:
    conv1 = getattr(block, "conv1", None)
    if getattr(block, "interpolation_mode", None) != "nearest" or not isinstance(conv1, nn.Sequential):
        return False
    conv = conv1[0]
    attention = getattr(block, "attention1", None)
    identity_attention = attention is None or all(isinstance(m, nn.Identity) for m in attention.modules()
                                                  if m is not attention)
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(conv1[-1], nn.ReLU) and identity_attention)


def fold_decoder_upsampling(model: nn.Module, image_size: int, min_channels: int = MIN_CHANNELS
                            ) -> tuple[nn.Module, int]:
    """A copy of an smp U-Net with every foldable decoder block rewritten; returns (model, blocks folded).

    Models without an smp U-Net decoder are returned unchanged (0 blocks). Needs an image size divisible
    by 32 so that every decoder step doubles the map exactly.
    """
    decoder = getattr(model, "decoder", None)
    blocks = getattr(decoder, "blocks", None)
    if blocks is None or image_size % 32:
        return model, 0
    folded = copy.deepcopy(model).eval()
    encoder_channels = list(folded.encoder.out_channels)[1:][::-1]
    skip_channels = encoder_channels[1:] + [0] * len(blocks)
    count = 0
    for i, block in enumerate(folded.decoder.blocks):
        if not _foldable(block) or block.conv1[0].in_channels - skip_channels[i] < min_channels:
            continue
        folded.decoder.blocks[i] = FoldedUpsampleDecoderBlock(block, skip_channels[i])
        count += 1
    return folded, count
