"""The one place that builds task models: `create_model(task, arch, ...)` over a table of tested architectures.

Architectures are timm names everywhere (`resnet50`, `mobilenetv3_large_100`, ...); the smp encoder behind a U-Net
(`tu-...` for timm-universal encoders) is an internal detail. A `pocus distill` student of architecture X (timm key
names, `num_classes=0, global_pool=''`) initialises the U-Net or classifier of the same X through
`load_student_encoder`, which maps its keys and drops only the timm head layers the task model does not use.
Phone-class encoders get a slim U-Net decoder by default: with smp's default (256..16 channels) the decoder, not the
encoder, dominates their cost (benchmarks/kd/README.md has FLOPs and latency of each).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..task_names import TASKS
from .tasks import Classifier, EmbeddingModel
from .vit_lora import VIT_ARCHITECTURES, ViTLoRAOptions, build_vit_task_model, is_vit_arch, load_vit_task_model

SMP_DEFAULT_DECODER = (256, 128, 64, 32, 16)
SLIM_DECODER = (48, 32, 24, 16, 8)


@dataclass(frozen=True)
class Architecture:
    """A tested encoder: its smp name inside a U-Net, default decoder width, and timm keys no task model uses."""

    smp_name: str
    decoder_channels: tuple[int, ...]
    phone_class: bool
    unused_head_keys: tuple[str, ...] = ()

    @property
    def smp_key_prefix(self) -> str:
        """smp's timm-universal encoders hold the timm model as `.model`; its native ResNets use timm's keys."""
        return "model." if self.smp_name.startswith("tu-") else ""


ARCHITECTURES: dict[str, Architecture] = {
    "resnet50": Architecture("resnet50", SMP_DEFAULT_DECODER, phone_class=False),
    "resnet18": Architecture("resnet18", SMP_DEFAULT_DECODER, phone_class=False),
    "mobilenetv3_large_100": Architecture("tu-mobilenetv3_large_100", SLIM_DECODER, True, ("conv_head.",)),
    "mobilenetv3_small_100": Architecture("tu-mobilenetv3_small_100", SLIM_DECODER, True, ("conv_head.",)),
    "efficientnet_b0": Architecture("tu-efficientnet_b0", SLIM_DECODER, True, ("conv_head.", "bn2.")),
    # ReLU, no squeeze-excitation: every op stays int8 in TFLite (benchmarks/kd/speed/README.md)
    "mobilenetv4_conv_small": Architecture("tu-mobilenetv4_conv_small", SLIM_DECODER, True,
                                           ("conv_head.", "norm_head.")),
}
BUILTIN_LABELS = {"segmentation": ["background", "lesion"], "classification": ["benign", "malignant", "normal"],
                  "embedding": []}
BUILTIN_PREFIX = {"segmentation": "unet", "classification": "classifier", "embedding": "encoder"}


def canonical_arch(name: str, option: str = "--architecture", teachers: bool = False) -> str:
    """A registered timm name (an smp `tu-` prefix is accepted and dropped); unknown names get a did-you-mean.

    `teachers=True` also accepts the ViT-LoRA teacher architectures (vit_lora.VIT_ARCHITECTURES, not phone-class).
    """
    key = str(name).strip()
    key = key[3:] if key.startswith("tu-") else key
    valid = list(ARCHITECTURES) + (list(VIT_ARCHITECTURES) if teachers else [])
    if key in valid:
        return key
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{option} {name!r} is not a supported architecture.{hint} "
                      f"Choose one of: {', '.join(valid)}")


def default_decoder_channels(arch: str) -> tuple[int, ...]:
    return ARCHITECTURES[canonical_arch(arch)].decoder_channels


def parse_decoder_channels(text: str | None) -> tuple[int, ...] | None:
    """'auto'/None -> None (the architecture's default); '48,32,24,16,8' -> five positive widths (a decoder to full
    resolution); four widths ('48,32,24,16') -> the last stage is left out and the head works at 1/2 resolution."""
    if text is None or str(text).strip().lower() in ("", "auto"):
        return None
    try:
        widths = tuple(int(x) for x in str(text).split(","))
    except ValueError:
        widths = ()
    if len(widths) not in (4, 5) or any(w < 1 or w > 1024 for w in widths):
        raise ConfigError(f"--decoder-channels {text!r}: give four or five widths 1..1024, deepest first "
                          f"(e.g. {','.join(map(str, SLIM_DECODER))}; four: the head runs at 1/2 resolution), "
                          "or 'auto'")
    return widths


class _EndAtHalfResolution(nn.Module):
    """Takes the place of the U-Net's last (full-resolution) decoder stage: its input passes unchanged."""

    def forward(self, x: torch.Tensor, target_height: int | None = None, target_width: int | None = None,
                skip_connection: torch.Tensor | None = None) -> torch.Tensor:
        return x


def _unet(spec: Architecture, num_classes: int, channels: tuple[int, ...]) -> nn.Module:
    """smp U-Net; with four decoder widths the full-resolution stage is dropped and a 3x3 head at 1/2 resolution
    is followed by a x2 bilinear upsampling (half-pixel centres, as the runtime resizes), so the logits keep the
    input size. At 128 px this halves a phone-class U-Net's int8 latency on XNNPACK (benchmarks/kd/speed/)."""
    import segmentation_models_pytorch as smp

    if len(channels) == 5:
        return smp.Unet(encoder_name=spec.smp_name, encoder_weights=None, classes=num_classes,
                        decoder_channels=channels)
    if len(channels) != 4:
        raise ConfigError(f"decoder_channels {list(channels)}: four or five widths expected")
    net = smp.Unet(encoder_name=spec.smp_name, encoder_weights=None, classes=num_classes,
                   decoder_channels=(*channels, channels[-1]))
    net.decoder.blocks[-1] = _EndAtHalfResolution()
    net.segmentation_head = nn.Sequential(nn.Conv2d(channels[-1], num_classes, kernel_size=3, padding=1),
                                          nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    return net


def timm_encoder(name: str) -> nn.Module:
    """A timm CNN with no classifier and no pooling (timm key names, as `pocus distill` saves them)."""
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"{name!r} is not a timm model; choose one of: {', '.join(ARCHITECTURES)}")
    return timm.create_model(name, pretrained=False, num_classes=0, global_pool="")


def create_model(task: str, arch: str = "resnet50", num_classes: int = 1,
                 decoder_channels: tuple[int, ...] | list[int] | None = None, vit: ViTLoRAOptions | None = None
                 ) -> nn.Module:
    """The random-weight model for a task; weights are loaded by the caller.

    segmentation: smp U-Net (K = num_classes logit maps); classification: encoder + GAP + linear;
    embedding: encoder + GAP + L2 norm (any timm CNN, so every `pocus distill` student can be exported).
    A ViT-LoRA teacher architecture (vit_lora.py) needs `vit` (backbone weights, image size, LoRA rank/alpha) and
    comes with its frozen backbone loaded; only its adapters and head are new.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if is_vit_arch(arch) and task != "embedding":
        return build_vit_task_model(task, arch, num_classes, vit)
    if task == "embedding":
        return EmbeddingModel(timm_encoder(arch[3:] if arch.startswith("tu-") else arch))
    spec = ARCHITECTURES[canonical_arch(arch)]
    if task == "classification":
        encoder = timm_encoder(canonical_arch(arch))
        return Classifier(encoder, encoder.num_features, num_classes)
    return _unet(spec, num_classes, tuple(decoder_channels) if decoder_channels else spec.decoder_channels)


def task_encoder(model: nn.Module) -> nn.Module:
    """The encoder module of any task model (what a distilled student initialises)."""
    return model.encoder


def load_student_encoder(model: nn.Module, task: str, arch: str, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a distilled student (timm keys) into a task model's encoder; refuses anything but an exact fit.

    Only the timm head layers listed for the architecture (e.g. MobileNetV3's conv_head, which no U-Net stage
    uses) may be left out; every encoder weight must be present with its shape.
    """
    spec = ARCHITECTURES[canonical_arch(arch)]
    encoder = task_encoder(model)
    prefix = spec.smp_key_prefix if task == "segmentation" else ""
    unused = spec.unused_head_keys if task == "segmentation" else ()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    mapped = {prefix + k: v for k, v in state.items() if not k.startswith(unused)}
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    misshaped = sorted(k for k in set(mapped) & set(expected) if tuple(mapped[k].shape) != expected[k])
    if missing or unexpected or misshaped:
        raise CheckpointError(f"{where}: encoder weights do not fit {arch} ({len(missing)} missing, e.g. "
                              f"{missing[:3]}; "
                              f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}; {len(misshaped)} of another "
                              f"shape, e.g. {misshaped[:3]})")
    # compare keys ourselves: smp's encoders override load_state_dict and return nothing
    encoder.load_state_dict(mapped, strict=False)


def load_task_model(path: Path, backbone_weights: str | None = None) -> tuple[nn.Module, dict]:
    """A `pocus finetune` / `pocus kd` checkpoint (card kind task_model) as an eval-mode model, with its card.

    A ViT-LoRA checkpoint is rebuilt on its backbone (the card's file, or `backbone_weights`, sha256-checked) and
    returned with its adapters merged into plain timm layers.
    """
    from .encoder_io import check_state_fits, load_encoder_state

    state, card = load_encoder_state(path)
    if card.get("kind") != "task_model":
        raise CheckpointError(f"{path}: is a {card.get('kind', 'unknown')} checkpoint, not a task model; give the "
                              "model.safetensors written by pocus finetune or pocus kd")
    if is_vit_arch(card.get("encoder")):
        return load_vit_task_model(Path(path), state, card, backbone_weights), card
    labels = list(card.get("labels", []))
    try:
        model = create_model(card["task"], card["encoder"], int(card.get("num_classes", len(labels) or 1)),
                             card.get("decoder_channels"))
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: card does not describe a model this version can build ({exc})")
    check_state_fits(model.state_dict(), state, f"{path}: weights do not fit the model its card describes")
    model.load_state_dict(state)
    return model.eval(), card


def builtin_models() -> dict[str, tuple[str, str]]:
    """Built-in smoke-test names -> (task, arch): unet-ARCH, classifier-ARCH, encoder-ARCH for every architecture."""
    return {f"{BUILTIN_PREFIX[task]}-{arch}": (task, arch) for arch in ARCHITECTURES for task in TASKS}
