"""The frozen ViT teacher: a timm DINOv3 (or DINOv2) model whose intermediate patch tokens are targets.

Contract: `Teacher(x)` takes a normalised B x 3 x S x S batch and returns B x N x D tokens, where N is
the patch grid (16 x 16 at 256 px for /16 models), the cls/register tokens are dropped, and D is the
embed dim times the number of blocks for `concat` (embed dim for `mean`). Always eval mode, no grad.
Weights come only from a local file (timm safetensors or Meta's released `.pth`); `random` must be
asked for explicitly and is for smoke tests only. There is no hub access.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

AGGREGATIONS = ("concat", "mean")
RANDOM_WEIGHTS = "random"


def _create_vit(name: str, image_size: int, extra: dict) -> nn.Module:
    import timm

    if not timm.is_model(name):
        options = [m for m in timm.list_models("*dinov[23]*")]
        raise ConfigError(f"--teacher {name!r} is not a timm model; DINOv3/DINOv2 ViTs include: {', '.join(options)}")
    kwargs = dict(pretrained=False, num_classes=0, img_size=image_size, dynamic_img_size=True)
    kwargs.update(extra)
    model = timm.create_model(name, **kwargs)
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
        raise ConfigError(f"--teacher {name!r} is not a ViT with intermediate-block access; use a DINOv3/DINOv2 ViT")
    return model


def _read_state_dict(path: Path, option: str = "--teacher-weights") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{option} {path}: no such file (pass a local .safetensors or .pth file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{option} {path}: cannot read it as safetensors or a torch state dict ({exc})")


def load_teacher_weights(model: nn.Module, path: Path, option: str = "--teacher-weights",
                         arch_option: str = "--teacher") -> None:
    """Load timm-format or Meta-format DINO weights; raise CheckpointError naming mismatched keys (and the flags)."""
    from timm.models.eva import checkpoint_filter_fn

    state = _read_state_dict(path, option)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{option} {path}: file holds no state dict")
    try:
        state = checkpoint_filter_fn(state, model)  # converts Meta's DINOv3 names to timm's
    except Exception as exc:
        raise CheckpointError(f"{option} {path}: cannot convert keys for this model ({exc})")
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own and not k.startswith("head"))
    wrong_shape = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise CheckpointError(
            f"{option} {path} does not match {arch_option} {model.default_cfg.get('architecture', '?')}: "
            + "; ".join(parts)
            + ". Check that the file is for this architecture (e.g. ViT-B/16 weights for vit_base_patch16_dinov3)."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


class Teacher(nn.Module):
    """Frozen ViT returning aggregated patch tokens of selected blocks."""

    def __init__(self, vit: nn.Module, blocks: list[int], aggregate: str, norm: bool):
        super().__init__()
        depth = len(vit.blocks)
        resolved = sorted({b % depth for b in blocks})
        if len(resolved) != len(blocks) or any(not -depth <= b < depth for b in blocks):
            raise ConfigError(f"--blocks {blocks}: need distinct block indices in [-{depth}, {depth - 1}]")
        if aggregate not in AGGREGATIONS:
            raise ConfigError(f"--aggregate {aggregate!r}: choose one of {AGGREGATIONS}")
        self.vit = vit.eval().requires_grad_(False)
        self.blocks = resolved
        self.aggregate = aggregate
        self.norm = norm
        self.embed_dim = int(vit.embed_dim)
        self.out_dim = self.embed_dim * (len(resolved) if aggregate == "concat" else 1)

    def train(self, mode: bool = True) -> Teacher:
        """The teacher stays in eval mode whatever its parent does."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.vit.forward_intermediates(
            x, indices=self.blocks, norm=self.norm, output_fmt="NLC", intermediates_only=True
        )
        if self.aggregate == "concat":
            return torch.cat(feats, dim=-1)
        return torch.stack(feats, dim=0).mean(dim=0)

    @torch.no_grad()
    def grid_size(self, image_size: int) -> tuple[int, int]:
        """Token grid (rows, cols) the teacher produces at this input size."""
        return tuple(self.vit.patch_embed.dynamic_feat_size((image_size, image_size)))


def build_teacher(
    name: str,
    weights: str,
    image_size: int,
    blocks: list[int] | None = None,
    aggregate: str = "concat",
    norm: bool = True,
    extra_kwargs: dict | None = None,
) -> Teacher:
    """Create the teacher and load its local weights (or keep random init when weights == 'random')."""
    vit = _create_vit(name, image_size, extra_kwargs or {})
    if weights != RANDOM_WEIGHTS:
        load_teacher_weights(vit, Path(weights))
    depth = len(vit.blocks)
    return Teacher(vit, blocks if blocks else [depth - 2, depth - 1], aggregate, norm)
