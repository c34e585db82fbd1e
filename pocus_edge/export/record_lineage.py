"""The lineage of a model: its checkpoint cards followed back to the first ancestor (record.py writes it).

Earliest ancestor first; each step with its sha256 (verified against the file when the file is still there):
a ViT teacher or backbone (raw weights) -> a `pocus distill` student (card kind encoder) -> fine-tuned checkpoints
(kind task_model; `init_sha256` names what each started from, `teacher` what `pocus kd` distilled) -> the export.
Only what the cards record is followed: a file that is gone is a step with its recorded sha256 and `file: not found`;
one whose sha256 changed since is recorded as changed and not followed. Each fine-tune's data (config.yaml,
metrics.json and splits.csv beside it, used only when metrics.json names these weights) gives folders, frame counts
and digests; `smoke_test_only` is true when any step descends from random weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..io import sha256_file

RANDOM = "random"
NOT_FOUND = "not found"
FRAME_DIGEST_RULE = "sha256 of the newline-joined sorted per-frame sha256 hex strings"
TRAINING_FRAME_RULE = "data/corpus.pixel_digest: sha256 of the decoded uint8 frame (shape + pixels)"
MAX_DEPTH = 16

@dataclass
class Lineage:
    """The model's ancestry (earliest first), the data each step trained on, and the exported model's test metrics."""

    steps: list[dict[str, Any]]
    training: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None

    @property
    def smoke_test_only(self) -> bool:
        """True when any step descends from random weights (None, a step whose flag is unknown, counts as no: its
        descendant's card carries the flag it had)."""
        return any(step["smoke_test_only"] for step in self.steps)

    @property
    def smoke_reasons(self) -> list[str]:
        return [step["smoke_reason"] for step in self.steps if step.get("smoke_reason")]


def trace_lineage(model_arg: str, source: str) -> Lineage:
    """Follow MODEL's cards back to its first ancestor. `source`: the resolved checkpoint path (TaskSpec.source) or
    the built-in's description."""
    if source.startswith("built-in:"):
        return Lineage([{"step": "built-in smoke model", "name": model_arg, "file": "random weights (built in)",
                         "sha256": None, "smoke_test_only": True,
                         "smoke_reason": f"built-in model {model_arg} has random weights"}])
    lineage = Lineage([])
    _checkpoint(Path(source), None, None, lineage, 0)
    exported = lineage.steps[-1] if lineage.steps else None
    if exported is not None:
        lineage.metrics = _test_metrics(Path(source), exported.get("sha256"))
    return lineage


def _checkpoint(path: Path, expected: str | None, used_as: str | None, lineage: Lineage, depth: int) -> bool:
    """Append the steps of a checkpoint with a card (its ancestors first); returns its smoke_test_only."""
    from ..models.encoder_io import read_card

    step: dict[str, Any] = {"step": "checkpoint", **({"used_as": used_as} if used_as else {})}
    if not path.is_file() or not path.with_suffix(".json").is_file():
        lineage.steps.append({**step, "file": NOT_FOUND, "recorded_path": str(path), "sha256": expected,
                              "smoke_test_only": None})  # unknown: the card that would say it is gone
        return False
    actual = sha256_file(path)
    try:
        card = read_card(path)
    except CheckpointError as exc:  # an ancestor's card that cannot be read: recorded, not followed
        lineage.steps.append({**step, "file": str(path), "sha256": actual, "smoke_test_only": None,
                              "note": f"card unreadable ({exc}); its ancestors are unknown"})
        return False
    step.update(step=_role(card), file=str(path), sha256=actual, architecture=card.get("encoder")
                or card.get("architecture"), origin=card.get("encoder_origin") or card.get("origin"))
    if expected is not None and actual != expected:
        lineage.steps.append({**step, "file": f"{path} (sha256 differs from the one recorded: changed since)",
                              "sha256": expected, "found_sha256": actual, "smoke_test_only": None})
        return False
    inherited = _parents(path, card, lineage, depth + 1) if depth < MAX_DEPTH else False
    flagged = bool(card.get("smoke_test_only"))
    step["smoke_test_only"] = flagged or inherited
    if flagged and not inherited:
        step["smoke_reason"] = f"the card of {path} says smoke_test_only (no recorded ancestor explains it)"
    elif inherited and not flagged:
        step["note"] = "its card says smoke_test_only false, but it descends from random weights"
    training = _training_data(path, card, actual)
    if training:
        lineage.training.append({"step": step["step"], "checkpoint": str(path), **training})
    lineage.steps.append(step)
    return step["smoke_test_only"]


def _role(card: dict[str, Any]) -> str:
    if card.get("kind") == "encoder":
        return "distilled student (pocus distill)" if card.get("origin") == "pocus distill" else "encoder"
    if "init_sha256" not in card and isinstance(card.get("teacher"), dict):
        return "distilled student (pocus kd stage 1)"
    if card.get("kd_student_sha256"):
        return "fine-tuned checkpoint (pocus kd stage 2)"
    return "fine-tuned checkpoint (pocus finetune)"


def _parents(path: Path, card: dict[str, Any], lineage: Lineage, depth: int) -> bool:
    """Append the ancestors a card records; returns whether any descends from random weights."""
    if card.get("kind") == "encoder":
        if "teacher_weights" not in card:
            return False
        return _weights("teacher", card.get("teacher"), card["teacher_weights"], card.get("teacher_weights_sha256"),
                        lineage, "random-weight teacher (--teacher-weights random)")
    backbone = card.get("backbone")
    if isinstance(backbone, dict):
        return _weights("frozen ViT backbone", backbone.get("architecture"), backbone.get("weights"),
                        backbone.get("sha256"), lineage, "random ViT backbone (--backbone-weights random)")
    if card.get("init_sha256"):
        return _checkpoint(_init_path(path, card), card["init_sha256"], "initialisation", lineage, depth)
    teacher = card.get("teacher")
    if isinstance(teacher, dict) and teacher.get("checkpoint"):
        return _checkpoint(Path(teacher["checkpoint"]), teacher.get("teacher_sha256"), "teacher", lineage, depth)
    return False


def _weights(role: str, architecture: Any, weights: Any, sha: Any, lineage: Lineage, why_random: str) -> bool:
    """A raw weights file without a card (a ViT teacher or backbone): the end of the chain."""
    step: dict[str, Any] = {"step": role, "architecture": architecture, "sha256": None if sha == RANDOM else sha}
    if weights == RANDOM:
        step.update(file="random weights", smoke_test_only=True, smoke_reason=why_random)
    elif weights and Path(str(weights)).is_file():
        actual = sha256_file(Path(weights))
        step.update(file=str(weights), smoke_test_only=False)
        if sha and actual != sha:
            step.update(file=f"{weights} (sha256 differs from the one recorded: changed since)", found_sha256=actual)
    else:
        step.update(file=NOT_FOUND, recorded_path=None if weights is None else str(weights), smoke_test_only=False)
    lineage.steps.append(step)
    return step["smoke_test_only"]


def _init_path(path: Path, card: dict[str, Any]) -> Path:
    """The file a fine-tune started from: its config.yaml's `encoder` beside it, else the path in encoder_origin."""
    config = _beside_yaml(path, "config.yaml")
    if isinstance(config.get("encoder"), str) and config["encoder"] != RANDOM:
        return Path(config["encoder"])
    match = re.match(r"(.+) \(sha256 [0-9a-f]+\)$", str(card.get("encoder_origin", "")))
    return Path(match.group(1)) if match else Path(str(card.get("encoder_origin", "")))


def _beside_yaml(path: Path, name: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((path.parent / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics_beside(path: Path, sha: str | None) -> dict[str, Any] | None:
    """metrics.json beside a fine-tuned checkpoint, only when it was written for these weights."""
    try:
        metrics = json.loads((path.parent / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("weights_sha256") == sha else None


def _test_metrics(path: Path, sha: str | None) -> dict[str, Any] | None:
    metrics = _metrics_beside(path, sha)
    if metrics is None or not isinstance(metrics.get("test"), dict):
        return None
    values = dict(metrics["test"])
    return {"split": "test", "images": values.pop("images", metrics.get("test_images")), "values": values,
            "source": str(path.parent / "metrics.json")}


def _training_data(path: Path, card: dict[str, Any], sha: str) -> dict[str, Any] | None:
    """The data a checkpoint trained on, as its card and run folder record it."""
    if card.get("kind") == "encoder":
        config, summary = card.get("config") or {}, card.get("training") or {}
        if not config.get("data"):
            return None
        return {"folders": list(config["data"]), "frames": {"train": summary.get("train_images"),
                "held_out": summary.get("held_out_images")}, "digest": None,
                "digest_note": "pocus distill does not record per-frame hashes of its corpus"}
    transfer = card.get("transfer")
    if "init_sha256" not in card and isinstance(transfer, dict):
        config = card.get("config") or {}
        return {"folders": list(config.get("data") or []), "frames": {"train": transfer.get("train_frames"),
                "held_out": transfer.get("held_out_frames")}, "digest": transfer.get("digest") or None,
                "frame_sha256": TRAINING_FRAME_RULE, "digest_rule": FRAME_DIGEST_RULE}
    metrics = _metrics_beside(path, sha)
    if metrics is None:
        return {"folders": [], "frames": None, "digest": None,
                "digest_note": f"no metrics.json for these weights beside {path}: the training data is not recorded"}
    data = _beside_yaml(path, "config.yaml").get("data")
    splits = _split_digests(path.parent / "splits.csv")
    return {"folders": [str(data)] if data else [], "frames": {k: metrics.get(f"{k}_images") for k in
            ("train", "val", "test")}, "splits": splits, "digest": (splits.get("train") or {}).get("digest"),
            "frame_sha256": TRAINING_FRAME_RULE, "digest_rule": FRAME_DIGEST_RULE}


def _split_digests(splits_csv: Path) -> dict[str, Any]:
    """{split: {frames, digest}} over the images splits.csv lists (train: those used for training)."""
    import csv

    from ..data.corpus import pixel_digest
    from ..data.readers import DECODE_ERRORS, read_frame

    try:
        with open(splits_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    by_split: dict[str, list[str]] = {}
    missing: dict[str, int] = {}
    for row in rows:
        split = row.get("split") or "?"
        if split == "train" and row.get("used_for_training") == "0":
            continue
        try:
            by_split.setdefault(split, []).append(pixel_digest(read_frame(Path(row.get("image") or ""))))
        except DECODE_ERRORS:
            missing[split] = missing.get(split, 0) + 1
    return {split: {"frames": len(hashes) + missing.get(split, 0),
                    "digest": None if missing.get(split) else digest_of(hashes),
                    **({"unreadable": missing[split]} if missing.get(split) else {})}
            for split, hashes in by_split.items()}


def digest_of(frame_hashes: list[str]) -> str:
    """The digest of a per-frame sha256 list (FRAME_DIGEST_RULE): independent of order and file names."""
    return hashlib.sha256("\n".join(sorted(frame_hashes)).encode()).hexdigest()
