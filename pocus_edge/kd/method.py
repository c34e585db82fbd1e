"""TS-KD's distillation stage as a method of the shared distill loop: frozen fine-tuned teacher, task student.

Data: the transfer folders go through the distill corpus loader (unreadable files skipped and listed, exact
duplicates dropped) minus every image of the labelled data's validation and test splits (by decoded-pixel hash,
so a copy under another name is caught too); `transfer_expand` adds that many fixed affine variants of each
training frame. Output: RUN_DIR/kd/student.safetensors, a task checkpoint that stage 2 fine-tunes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from ..distill.ddp import DistEnv
from ..distill.method import DistillMethod
from ..distill.setup import RunData, prepare_data
from ..errors import ConfigError
from ..finetune.data import eval_split_digests, read_samples
from ..io import sha256_file
from ..models.encoder_io import save_encoder
from ..models.registry import canonical_arch, create_model, load_task_model
from ..task_names import TASK_ARGUMENT_OF
from .config import KD_RESUME_FIELDS, KDConfig
from .losses import kd_loss
from .models import FrozenTeacher, KDStudent, feature_channels, output_tokens
from .transfer import ExpandedFrames

log = logging.getLogger(__name__)


def held_out_digests(labeled_data: str, task: str, seed: int) -> set[str]:
    """Pixel digests of the labelled folder's validation and test images (the splits pocus finetune makes)."""
    read_samples(Path(labeled_data), task)  # a folder that cannot serve the task fails here, with the reason
    return eval_split_digests(Path(labeled_data), (task,), seed)


class TaskKD(DistillMethod):
    """Hidden-feature + output-logit distillation of a task model into a smaller task model."""

    name = "ts-kd"
    resume_fields = KD_RESUME_FIELDS

    def __init__(self, cfg: KDConfig) -> None:
        self.weights = (cfg.output_weight, cfg.hidden_weight, cfg.temperature)
        self.excluded = 0
        self.digest = ""
        self.teacher_card: dict = {}

    def prepare_data(self, cfg: KDConfig, env: DistEnv) -> RunData:
        exclude = held_out_digests(cfg.labeled_data, cfg.task, cfg.seed if cfg.split_seed is None else cfg.split_seed)
        data = prepare_data(cfg, env, exclude=exclude, expand=cfg.transfer_expand)
        self.excluded = len(data.corpus.excluded)
        self.digest = hashlib.sha256("\n".join(sorted(data.corpus.frame_digests)).encode()).hexdigest()
        log.info("transfer set: %d frames kept, %d removed as images of the labelled val/test splits, x%d with "
                 "--transfer-expand", len(data.corpus.frames), self.excluded, cfg.transfer_expand + 1)
        return data

    def train_dataset(self, frames: list, cfg: KDConfig):
        return ExpandedFrames(frames, cfg.image_size, cfg.aug, cfg.transfer_expand)

    def build_models(self, cfg: KDConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
        teacher_net, self.teacher_card = load_task_model(Path(cfg.teacher_checkpoint))
        if self.teacher_card.get("task") != cfg.task:
            kind = TASK_ARGUMENT_OF.get(self.teacher_card.get("task"), "?")
            raise ConfigError(f"--teacher {cfg.teacher_checkpoint} is a {self.teacher_card.get('task')} model; "
                              f"use `pocus kd {kind}` or a {cfg.task} teacher")
        teacher = FrozenTeacher(teacher_net.float(), cfg.task)
        num_classes = int(self.teacher_card.get("num_classes", 1))
        torch.manual_seed(cfg.seed)
        net = create_model(cfg.task, canonical_arch(cfg.student, "--student"), num_classes, cfg.decoder_channels)
        teacher_channels = feature_channels(teacher.net, cfg.task, cfg.image_size)
        student = KDStudent(net, cfg.task, feature_channels(net, cfg.task, cfg.image_size), teacher_channels)
        return teacher.to(device), student.to(device)

    def loss(self, teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return kd_loss(student(images), teacher(images), *self.weights)

    def eval_tokens(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return output_tokens(model(images)[0])

    def fingerprint(self, cfg: KDConfig) -> dict:
        return {"teacher_sha256": sha256_file(Path(cfg.teacher_checkpoint))}

    def save(self, run_dir: Path, model: nn.Module, cfg: KDConfig, teacher: nn.Module, summary: dict) -> None:
        card = self.teacher_card
        save_encoder(run_dir / "student.safetensors", model.net, canonical_arch(cfg.student), cfg.image_size, {
            "kind": "task_model", "task": cfg.task, "name": f"{'unet' if cfg.task == 'segmentation' else 'classifier'}"
            f"-{canonical_arch(cfg.student)}", "encoder": canonical_arch(cfg.student),
            "num_classes": card.get("num_classes", 1), "labels": card.get("labels", []),
            "threshold": card.get("threshold"), "decoder_channels": _decoder_of(cfg),
            "encoder_origin": f"pocus kd stage 1 from {cfg.teacher_checkpoint}", "origin": "pocus kd (distillation)",
            "teacher": {"checkpoint": cfg.teacher_checkpoint, **self.fingerprint(cfg),
                        "architecture": card.get("encoder"), "smoke_test_only": bool(card.get("smoke_test_only"))},
            "smoke_test_only": bool(card.get("smoke_test_only")), "transfer": transfer_record(self, summary),
            "training": summary, "config": cfg.to_dict()})


def _decoder_of(cfg: KDConfig) -> list[int] | None:
    if cfg.task != "segmentation":
        return None
    from ..models.registry import default_decoder_channels

    return list(cfg.decoder_channels or default_decoder_channels(cfg.student))


def transfer_record(method: TaskKD, summary: dict) -> dict:
    """What the card records about the transfer set; the digest is over the sorted per-frame pixel hashes."""
    return {"train_frames": summary.get("train_images"), "held_out_frames": summary.get("held_out_images"),
            "removed_labelled_val_test": method.excluded, "skipped_files": summary.get("skipped_files"),
            "duplicates_removed": summary.get("duplicates_removed"), "digest": method.digest}
