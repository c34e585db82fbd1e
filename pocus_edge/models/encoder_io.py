"""Save and load encoder weights as `*.safetensors` + a `*.json` card that describes them.

The card records the timm architecture, input size, channels, normalisation, origin and the
sha256 of the weights file; loading verifies the hash, so a truncated or swapped file is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError
from ..io import atomic_write, atomic_write_json, sha256_file

CARD_SCHEMA_VERSION = 1


def save_encoder(weights_path: Path, encoder: nn.Module, architecture: str, image_size: int, extra: dict) -> dict:
    """Atomically write encoder weights (timm key names) and the card beside them; returns the card."""
    from safetensors.torch import save_file

    weights_path = Path(weights_path)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    atomic_write(weights_path, lambda p: save_file(state, str(p), metadata={"architecture": architecture}))
    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "kind": "encoder",
        "task": "embedding",
        "architecture": architecture,
        "framework": "timm",
        "input_size": [image_size, image_size],
        "channels": 3,
        "gray_to_rgb": "replicate",
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "value_range": [0.0, 1.0]},
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
        **extra,
    }
    atomic_write_json(weights_path.with_suffix(".json"), card)
    return card


def load_encoder_state(weights_path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read weights and card, verifying the card's sha256; raises CheckpointError with the fix."""
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    card_path = weights_path.with_suffix(".json")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: no such weights file")
    if not card_path.is_file():
        raise CheckpointError(f"{weights_path}: its card {card_path.name} is missing; copy it next to the weights")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{card_path}: not valid JSON ({exc})")
    actual = sha256_file(weights_path)
    if card.get("weights_sha256") != actual:
        raise CheckpointError(
            f"{weights_path}: sha256 {actual[:12]}… does not match its card ({str(card.get('weights_sha256'))[:12]}…); "
            "the file is corrupt or was replaced"
        )
    return load_file(str(weights_path)), card
