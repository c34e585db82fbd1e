"""Save and load encoder weights as `*.safetensors` + a `*.json` card that describes them.

The card records the timm architecture, input size, channels, normalisation, origin and the
sha256 of the weights file; loading verifies the hash, so a truncated or swapped file is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError
from ..io import atomic_write, atomic_write_json, sha256_file
from ..runtime.manifest import read_json_object

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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    card_path = weights_path.with_suffix(".json")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: no such weights file")
    check_safetensors(weights_path)
    if not card_path.is_file():
        raise CheckpointError(f"{weights_path}: its card {card_path.name} is missing; copy it next to the weights")
    card = _parse_card(card_path)
    actual = sha256_file(weights_path)
    if card.get("weights_sha256") != actual:
        raise CheckpointError(
            f"{weights_path}: sha256 {actual[:12]}… does not match its card ({str(card.get('weights_sha256'))[:12]}…); "
            "the file is corrupt or was replaced"
        )
    try:
        return load_file(str(weights_path)), card
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: cannot read the weights ({exc}); the file is corrupt: re-create it")


def check_safetensors(path: Path) -> None:
    """Refuse a file that is not a complete safetensors file before any parser sees it (a pickle is named as such:
    pocus-edge never unpickles weights)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    header_len = int.from_bytes(head[:8], "little") if len(head) == 9 else -1
    if len(head) == 9 and head[8:9] == b"{" and 8 + header_len <= path.stat().st_size:
        return
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise CheckpointError(f"{path}: this is a PyTorch pickle (torch.save), not .safetensors; pocus-edge never "
                              "unpickles weights: convert it with safetensors.torch.save_file("
                              "torch.load(FILE, weights_only=True), 'encoder.safetensors') and write its card")
    raise CheckpointError(f"{path}: not a complete .safetensors file (truncated or another format); re-copy or "
                          "re-create it")


def read_card(weights_path: Path) -> dict:
    """The JSON card beside a weights file, without reading the weights (they are verified when loaded)."""
    card_path = Path(weights_path).with_suffix(".json")
    if not card_path.is_file():
        raise CheckpointError(f"{weights_path}: no such checkpoint, or its card {card_path.name} is missing")
    return _parse_card(card_path)


def _parse_card(card_path: Path) -> dict:
    """A card file as a dict; CheckpointError when it is not a JSON object."""
    return read_json_object(card_path, CheckpointError, "a checkpoint card")


def card_threshold(card: dict, where: Path | str) -> float | None:
    """The probability threshold a model's outputs are post-processed with: a segmentation card must carry its
    own (never a silent default), other tasks have none. CheckpointError naming the card otherwise."""
    if card.get("task") != "segmentation":
        return None
    threshold = card.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise CheckpointError(f"{where}: the card's threshold is {threshold!r}; a segmentation card needs its mask "
                              "threshold, a number in [0, 1] (pocus finetune writes one): add \"threshold\" to the "
                              "card or re-run pocus finetune")
    return float(threshold)


def check_state_fits(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError("{what} (missing ..., unexpected ..., other shape ...)") unless keys and shapes agree."""
    want = {k: tuple(v.shape) for k, v in expected.items()}
    have = {k: tuple(v.shape) for k, v in found.items()}
    if want != have:
        missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        misshaped = sorted(k for k in set(want) & set(have) if want[k] != have[k])
        raise CheckpointError(f"{what} (missing {len(missing)}: {missing[:3]}, unexpected {len(unexpected)}: "
                              f"{unexpected[:3]}, other shape {len(misshaped)}: {misshaped[:3]})")
