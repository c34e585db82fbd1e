"""Resolve the MODEL argument of `pocus-export` into an eval-mode fp32 torch model and its TaskSpec.

MODEL is a built-in name (random-weight smoke model, models/smoke.py), a
`model.safetensors` from `pocus finetune` (card kind `task_model`), or a `student.safetensors` from
`pocus distill` (card kind `encoder`, exported as an embedding model). Cards are verified by sha256.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import CheckpointError, ConfigError
from ..models.registry import BUILTIN_LABELS, builtin_models, create_model, load_task_model
from ..models.smoke import build_smoke_model
from ..models.tasks import TaskSpec
from ..runtime.postprocess import DEFAULT_THRESHOLD
from ..runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

BUILTINS = builtin_models()


def _builtin(name: str, image_size: int) -> tuple[nn.Module, TaskSpec]:
    task, arch = BUILTINS[name]
    labels = BUILTIN_LABELS[task]
    num_classes = len(labels) if task == "classification" else 1
    spec = TaskSpec(name=name, task=task, encoder=arch, labels=labels, image_size=image_size,
                    threshold=DEFAULT_THRESHOLD if task == "segmentation" else None,
                    source=f"built-in:{name} (random weights)")
    return build_smoke_model(task, arch, num_classes, image_size), spec


def _load_state(model: nn.Module, state: dict, where: Path) -> None:
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: weights do not fit the model described by its card "
            f"(missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: {unexpected[:3]})"
        )


def _from_checkpoint(path: Path, image_size: int | None) -> tuple[nn.Module, TaskSpec]:
    from ..models.encoder_io import card_threshold, load_encoder_state, read_card

    card = read_card(path)
    kind = card.get("kind")
    size = image_size or int(card.get("input_size", [256])[0])
    norm = card.get("normalization", {})
    common = dict(image_size=size, source=str(path), source_sha256=card.get("weights_sha256"),
                  mean=tuple(norm.get("mean", IMAGENET_MEAN)), std=tuple(norm.get("std", IMAGENET_STD)))
    if kind == "encoder":
        state, card = load_encoder_state(path)
        model = create_model("embedding", card["architecture"])
        _load_state(model.encoder, state, path)
        spec = TaskSpec(name=f"{card['architecture']}-embedding", task="embedding", encoder=card["architecture"],
                        labels=[], threshold=None, **common)
    elif kind == "task_model":
        model, card = load_task_model(path)
        task = card["task"]
        spec = TaskSpec(name=card.get("name", f"{task}-{card['encoder']}"), task=task, encoder=card["encoder"],
                        labels=list(card.get("labels", [])),
                        threshold=card_threshold(card, path), **common)  # never a silent 0.5
    else:
        raise CheckpointError(f"{path}: card kind {kind!r} is not exportable (expected 'task_model' or 'encoder')")
    return model, spec


def resolve_model(model: str, image_size: int | None) -> tuple[nn.Module, TaskSpec]:
    """MODEL argument -> (eval-mode fp32 module on CPU, TaskSpec); raises with the fix on bad input."""
    if image_size is not None and (image_size < 32 or image_size % 32):
        raise ConfigError(f"--image-size {image_size}: must be a positive multiple of 32 (e.g. 224, 256, 320)")
    if model in BUILTINS:
        net, spec = _builtin(model, image_size or 256)
    else:
        path = Path(model)
        if not path.exists():
            raise ConfigError(
                f"MODEL {model!r} is neither a built-in (unet-ARCH, classifier-ARCH or encoder-ARCH, e.g. "
                f"unet-resnet50, unet-mobilenetv3_large_100) nor an existing checkpoint file"
            )
        if path.is_dir():
            candidates = [path / "model.safetensors", path / "student.safetensors"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise ConfigError(f"{path}: folder holds no model.safetensors or student.safetensors")
            path = found
        if path.suffix != ".safetensors":
            raise ConfigError(f"{path}: expected a .safetensors checkpoint with its .json card beside it")
        net, spec = _from_checkpoint(path, image_size)
        if spec.image_size % 32:
            raise ConfigError(f"checkpoint input size {spec.image_size} is not a multiple of 32; pass --image-size")
    return net.eval().float(), spec
