"""The ViT teacher of TS-KD: a frozen timm DINOv3/DINOv2 ViT with LoRA on q and v (lora.py) and a light task head.

Contract: `ViTTaskModel(x)` takes a normalised B x 3 x S x S batch and returns segmentation mask logits B x K x S x S
(patch tokens -> grid -> 3x3 conv, ReLU, 1x1 conv -> bilinear upsampling to S) or class logits B x K (linear on the
mean of the patch tokens). `logits_and_features(x)` adds the last block's patch tokens (after the final norm) as a
B x D x h x w grid: what `pocus kd` aligns a student to. Only the adapters and the head are trainable.

The backbone comes only from a local file (timm safetensors or Meta's .pth, converted by
`teacher.load_teacher_weights`) or `random` (created under a fixed seed, for smoke tests only). A checkpoint stores
the adapters and the head, tied to the backbone by sha256 (of the file, or of the generated tensors for `random`);
loading rebuilds the backbone, refuses any other one, and returns the merged model (plain timm layers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..io import sha256_file
from ..task_names import TRAINABLE_TASKS
from .encoder_io import check_state_fits
from .lora import LoRAConfig, inject_lora, is_adapter_key, merge_lora
from .teacher import RANDOM_WEIGHTS, load_teacher_weights

# DINOv3 / DINOv2 ViTs whose attention calls a fused qkv Linear (the *_qkvb DINOv3 variants do not).
VIT_ARCHITECTURES = (
    "vit_base_patch16_dinov3", "vit_small_patch16_dinov3", "vit_small_plus_patch16_dinov3",
    "vit_large_patch16_dinov3", "vit_huge_plus_patch16_dinov3", "vit_small_patch14_dinov2",
    "vit_base_patch14_dinov2", "vit_large_patch14_dinov2", "vit_small_patch14_reg4_dinov2",
    "vit_base_patch14_reg4_dinov2", "vit_large_patch14_reg4_dinov2",
)
RANDOM_BACKBONE_SEED = 0
HEAD_HIDDEN = 256
WARMUP_STEPS = 250  # TS-KD: linear warm-up, then the finetune schedule
LEARNING_RATE = 5e-3  # TS-KD: AdamW on adapters and head
LOSS_WEIGHTS = (0.2, 0.8)  # TS-KD: 0.2 x CE (BCE for one class) + 0.8 x Dice


@dataclass
class ViTLoRAOptions:
    """What a ViT-LoRA model needs besides task and architecture (registry.create_model's `vit=`)."""

    backbone_weights: str
    image_size: int
    rank: int = 8
    alpha: float | None = None  # None: 2 x rank
    backbone_kwargs: dict = field(default_factory=dict)  # extra timm kwargs (tests: a tiny ViT)

    def lora(self) -> LoRAConfig:
        return LoRAConfig(self.rank, float(self.alpha) if self.alpha is not None else 2.0 * self.rank)


class SegHead(nn.Module):
    """Patch-token grid -> 3x3 conv, ReLU, 1x1 conv -> bilinear upsampling to the input size."""

    def __init__(self, dim: int, num_classes: int, hidden: int = HEAD_HIDDEN):
        super().__init__()
        self.conv = nn.Conv2d(dim, hidden, kernel_size=3, padding=1)
        self.classifier = nn.Conv2d(hidden, num_classes, kernel_size=1)

    def forward(self, grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.classifier(F.relu(self.conv(grid)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class ViTTaskModel(nn.Module):
    """Frozen ViT (`encoder`, with or without adapters) + segmentation head or linear classifier (`head`)."""

    def __init__(self, encoder: nn.Module, task: str, num_classes: int, hidden: int = HEAD_HIDDEN):
        super().__init__()
        if task not in TRAINABLE_TASKS.values():
            raise ConfigError(f"a ViT-LoRA model is for segmentation or classification, not {task!r}")
        self.encoder, self.task = encoder, task
        dim = int(encoder.embed_dim)
        self.head = SegHead(dim, num_classes, hidden) if task == "segmentation" else nn.Linear(dim, num_classes)

    def train(self, mode: bool = True) -> ViTTaskModel:
        """The backbone stays in eval mode (frozen); only the head follows `mode`."""
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens of the last block (cls/register tokens dropped) as a B x D x h x w grid."""
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens:]
        h, w = self.encoder.patch_embed.dynamic_feat_size(tuple(x.shape[-2:]))
        return tokens.transpose(1, 2).reshape(x.shape[0], tokens.shape[-1], h, w)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.features(x)
        if self.task == "segmentation":
            return self.head(grid, tuple(x.shape[-2:])), grid
        return self.head(grid.mean(dim=(2, 3))), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_features(x)[0]


def is_vit_arch(arch: str | None) -> bool:
    return arch in VIT_ARCHITECTURES


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict (the identity of a `random` backbone)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _timm_vit(arch: str, image_size: int, kwargs: dict) -> nn.Module:
    """The timm ViT with pretrained=False, created under a fixed seed (so `random` is the same every time).

    DINO ViTs initialise their layer-scale gammas to 1e-5, so a random one is nearly the identity on its residual
    stream and adapters would change nothing measurable; the gammas are drawn from 0.5..1 instead (a file's weights
    replace them), so smoke tests of LoRA, merging and export exercise live attention branches.
    """
    import timm

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_BACKBONE_SEED)
            pad = {"dynamic_img_pad": True} if "patch14" in arch else {}  # DINOv2: sizes are multiples of 32
            vit = timm.create_model(arch, pretrained=False, num_classes=0, img_size=image_size,
                                    dynamic_img_size=True, **{**pad, **kwargs})
            with torch.no_grad():
                for name, param in vit.named_parameters():
                    if name.rsplit(".", 1)[-1] in ("gamma_1", "gamma_2", "gamma"):
                        param.uniform_(0.5, 1.0)
            return vit
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--architecture {arch} with backbone kwargs {kwargs}: timm cannot build it ({exc})")


def _backbone_file(weights: str) -> Path:
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"--backbone-weights {weights}: no such file; pass a local DINOv3/DINOv2 .safetensors "
                              "or .pth file (or random for smoke tests)")
    return path


def build_vit_task_model(task: str, arch: str, num_classes: int, options: ViTLoRAOptions | None) -> ViTTaskModel:
    """Backbone from options.backbone_weights (or random), adapters injected, a new head; the backbone record
    (sha256, weights path, kwargs, image size, LoRA settings) is kept on the model as `card_fields`."""
    if options is None:
        raise ConfigError(f"--architecture {arch} is a ViT teacher: give --backbone-weights FILE (a local DINOv3/"
                          "DINOv2 weights file), or random for smoke tests")
    lora = options.lora()
    sha = None if options.backbone_weights == RANDOM_WEIGHTS else sha256_file(_backbone_file(options.backbone_weights))
    vit = _timm_vit(arch, options.image_size, dict(options.backbone_kwargs))
    if sha is None:
        sha = state_sha256(vit.state_dict())
    else:
        load_teacher_weights(vit, Path(options.backbone_weights), "--backbone-weights", "--architecture")
    lora.check(int(vit.embed_dim))
    model = ViTTaskModel(inject_lora(vit, lora), task, num_classes)
    weights = options.backbone_weights
    model.card_fields = {
        "backbone": {"architecture": arch, "name": Path(weights).name if weights != RANDOM_WEIGHTS else RANDOM_WEIGHTS,
                     "weights": weights if weights == RANDOM_WEIGHTS else str(Path(weights).resolve()),
                     "sha256": sha, "kwargs": dict(options.backbone_kwargs), "image_size": options.image_size,
                     "random_seed": RANDOM_BACKBONE_SEED if weights == RANDOM_WEIGHTS else None},
        "lora": {"target": [f"attn.qkv.{t}" for t in lora.target], "rank": lora.rank, "alpha": lora.alpha},
        "head_hidden": HEAD_HIDDEN if task == "segmentation" else None,
    }
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters and the head: all a ViT-LoRA checkpoint stores."""
    return {k: v for k, v in model.state_dict().items() if is_adapter_key(k) or k.startswith("head.")}


class CheckpointView(nn.Module):
    """Presents only the adapters and head of a ViT-LoRA model to the checkpoint writer (save_encoder)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._state = trainable_state(model)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return dict(self._state)


def _resolve_backbone(path: Path, record: dict, override: str | None) -> str:
    """The backbone weights to load: override, else the card's path, else a file of that name beside the checkpoint;
    a file must have the sha256 the card records."""
    trained_on = f"{record.get('name')} (sha256 {record['sha256'][:12]}…)"
    if override == RANDOM_WEIGHTS or (override is None and record["weights"] == RANDOM_WEIGHTS):
        if record["weights"] != RANDOM_WEIGHTS:
            raise CheckpointError(f"--backbone-weights random: {path} was trained on {trained_on}, not a random "
                                  "backbone; pass that file")
        return RANDOM_WEIGHTS
    candidates = [Path(override)] if override is not None else [
        Path(record["weights"]), path.parent / str(record.get("name", ""))]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CheckpointError(f"{path}: its backbone {candidates[0]} is not found; pass --backbone-weights FILE with "
                              f"{trained_on}, or copy that file next to the checkpoint")
    actual = sha256_file(found)
    if actual != record["sha256"]:
        raise CheckpointError(f"--backbone-weights {found}: sha256 {actual[:12]}… is not the backbone this checkpoint "
                              f"was trained on ({record.get('name')}, sha256 {record['sha256'][:12]}…); pass that file")
    return str(found)


def load_vit_task_model(path: Path, state: dict[str, torch.Tensor], card: dict,
                        backbone_weights: str | None = None, merge: bool = True) -> nn.Module:
    """Rebuild a ViT-LoRA checkpoint on its backbone (card path, or `backbone_weights`); merged by default."""
    try:
        record, lora = dict(card["backbone"]), dict(card["lora"])
        arch, task, num_classes = record["architecture"], card["task"], int(card["num_classes"])
        cfg = LoRAConfig(int(lora["rank"]), float(lora["alpha"]),
                         tuple(t.rsplit(".", 1)[-1] for t in lora["target"]))
        image_size, kwargs = int(record["image_size"]), dict(record.get("kwargs") or {})
        if not isinstance(record["sha256"], str) or not isinstance(record["weights"], str):
            raise TypeError("backbone.sha256 / backbone.weights")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: card does not describe a ViT-LoRA model this version can build "
                              f"(missing or bad field {exc})")
    weights = _resolve_backbone(path, record, backbone_weights)
    vit = _timm_vit(arch, image_size, kwargs)
    if weights == RANDOM_WEIGHTS:
        actual = state_sha256(vit.state_dict())
        if actual != record["sha256"]:
            raise CheckpointError(f"{path}: the random backbone built here (sha256 {actual[:12]}…) differs from the "
                                  f"one it was trained on ({record['sha256'][:12]}…), e.g. another timm version; "
                                  "random backbones are for smoke tests only: retrain")
    else:
        load_teacher_weights(vit, Path(weights), "--backbone-weights", "--architecture")
    model = ViTTaskModel(inject_lora(vit, cfg), task, num_classes, int(card.get("head_hidden") or HEAD_HIDDEN))
    check_state_fits(trainable_state(model), state, f"{path}: adapters and head do not fit the model its card "
                     "describes")
    model.load_state_dict(state, strict=False)
    model.card_fields = {k: card.get(k) for k in ("backbone", "lora", "head_hidden")}
    return (merge_lora(model) if merge else model).eval()
