"""LoRA on the slices of a fused qkv projection, shaped like peft: a config, injection, adapter keys, merge.

timm ViTs (DINOv2 `Attention`, DINOv3 `EvaAttention`) compute q, k and v with one `nn.Linear(D, 3D)` called
`attn.qkv`. LoRA as in the paper adapts only the query and value projections; peft cannot target slices of a
fused layer (huggingface/peft#1705: "fused QKV but we want to apply LoRA only to Q and V ... is currently not
possible"), so this module does it:

    out = qkv(x) + scaling * [B_q A_q x, 0, B_v A_v x],   scaling = alpha / rank,   B zero-initialised,

which leaves the model's outputs unchanged until training moves B. `merge_lora` folds the adapters into the qkv
weights (W + scaling * [B_q A_q; 0; B_v A_v]) and returns a plain model with the same outputs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

SLICES = ("q", "k", "v")
MAX_RANK = 4096  # the rank limit before the ViT (and its width) is known


@dataclass(frozen=True)
class LoRAConfig:
    """Which slices of every block's `attn.qkv` get adapters, their rank and alpha (peft's LoraConfig, reduced)."""

    rank: int = 8
    alpha: float = 16.0
    target: tuple[str, ...] = ("q", "v")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def check(self, width: int | None = None) -> None:
        """Refuse a rank outside 1..width, a non-positive alpha, or a target other than slices of q, k, v."""
        top = width or MAX_RANK
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not 1 <= self.rank <= top:
            raise ConfigError(f"--lora-rank {self.rank}: must be an integer from 1 to the ViT's width ({top}); "
                              "TS-KD uses 8")
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                                 and self.alpha > 0):
            raise ConfigError(f"--lora-alpha {self.alpha}: must be a positive number (default 2 x rank)")
        if not self.target or any(t not in SLICES for t in self.target) or len(set(self.target)) != len(self.target):
            raise ConfigError(f"LoRA target {list(self.target)}: give distinct slices of {list(SLICES)}")


class LoRAQKV(nn.Module):
    """A frozen fused qkv Linear plus low-rank updates of some of its three output slices."""

    def __init__(self, base: nn.Linear, cfg: LoRAConfig):
        super().__init__()
        if base.out_features % 3:
            raise ConfigError(f"qkv projection with {base.out_features} outputs is not three equal slices")
        self.base_layer = base.requires_grad_(False)
        self.width = base.out_features // 3
        self.target = tuple(cfg.target)
        self.scaling = cfg.scaling
        self.lora_A = nn.ModuleDict({t: nn.Linear(base.in_features, cfg.rank, bias=False) for t in self.target})
        self.lora_B = nn.ModuleDict({t: nn.Linear(cfg.rank, self.width, bias=False) for t in self.target})
        for t in self.target:  # peft's default init: A Kaiming-uniform, B zero -> the update starts at exactly 0
            nn.init.kaiming_uniform_(self.lora_A[t].weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[t].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = None
        parts = []
        for t in SLICES:
            if t in self.target:
                parts.append(self.lora_B[t](self.lora_A[t](x)))
            else:
                zeros = x.new_zeros(*x.shape[:-1], self.width) if zeros is None else zeros
                parts.append(zeros)
        return self.base_layer(x) + self.scaling * torch.cat(parts, dim=-1)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear whose weight is W + scaling * [B_q A_q; 0; B_v A_v] (computed in float64)."""
        base = self.base_layer
        delta = torch.zeros(base.out_features, base.in_features, dtype=torch.float64)
        for i, t in enumerate(SLICES):
            if t in self.target:
                b, a = self.lora_B[t].weight.double(), self.lora_A[t].weight.double()
                delta[i * self.width:(i + 1) * self.width] = self.scaling * (b @ a)
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        out.weight.copy_((base.weight.double() + delta).to(base.weight.dtype))
        if base.bias is not None:
            out.bias.copy_(base.bias)
        return out.requires_grad_(False).to(base.weight.device)


def _qkv_owners(vit: nn.Module) -> list[nn.Module]:
    """The attention module of every block; refuses ViTs that do not call a fused `qkv` Linear themselves."""
    owners = []
    for i, block in enumerate(getattr(vit, "blocks", [])):
        attn = getattr(block, "attn", None)
        qkv = getattr(attn, "qkv", None)
        # EvaAttention with q/v biases (timm's *_qkvb models) reads qkv.weight directly in F.linear, which would
        # bypass an adapter silently: refuse it rather than train adapters that never act.
        if not isinstance(qkv, (nn.Linear, LoRAQKV)) or getattr(attn, "q_bias", None) is not None:
            raise ConfigError(f"block {i} has no fused attn.qkv Linear that LoRA can wrap; use a DINOv3/DINOv2 ViT "
                              "without separate q/v biases (e.g. vit_base_patch16_dinov3, not *_qkvb)")
        owners.append(attn)
    if not owners:
        raise ConfigError("the backbone has no transformer blocks to adapt")
    return owners


def inject_lora(vit: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Freeze every backbone weight and wrap each block's attn.qkv with adapters (in place); returns vit."""
    cfg.check(int(getattr(vit, "embed_dim", 0)) or None)
    vit.requires_grad_(False)
    for attn in _qkv_owners(vit):
        if isinstance(attn.qkv, LoRAQKV):
            raise ConfigError("the backbone already carries LoRA adapters")
        attn.qkv = LoRAQKV(attn.qkv, cfg)
    return vit


def is_adapter_key(key: str) -> bool:
    """True for state-dict keys of adapter weights (what a checkpoint stores of the backbone)."""
    return ".lora_A." in key or ".lora_B." in key


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of `model` with every adapter folded into its qkv weights: plain timm layers, same outputs."""
    merged = copy.deepcopy(model)
    for name, module in list(merged.named_modules()):
        if isinstance(module, LoRAQKV):
            parent_name, _, child = name.rpartition(".")
            setattr(merged.get_submodule(parent_name) if parent_name else merged, child, module.merged())
    return merged
