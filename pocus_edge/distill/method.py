"""What a distillation objective plugs into the one training loop (`trainer.Distiller`).

A method builds the frozen teacher and the trainable student, computes the loss of a batch, names the settings a
`--resume` must not change (plus a fingerprint of the teacher's weights), and writes the run's outputs. The loop owns
everything else: batch plan, accumulation, mixup, AMP, DDP, checkpoints, resume, held-out R², progress, metrics.
`TokenDistillation` is `pocus distill` (the paper's eq. 6); `pocus kd` plugs in `pocus_edge.kd.method.TaskKD`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.dataset import AugmentedFrames
from ..finetune.data import eval_images_of
from ..io import sha256_file
from ..models.encoder_io import save_encoder
from ..models.teacher import RANDOM_WEIGHTS
from .config import DistillConfig
from .ddp import DistEnv
from .objective import token_mse
from .setup import RESUME_FIELDS, RunData, build_models, prepare_data

log = logging.getLogger(__name__)


class DistillMethod(ABC):
    """Interface and default behaviour; subclasses give the models and the outputs, and override what differs."""

    name = "base"
    resume_fields: tuple[str, ...] = RESUME_FIELDS

    def prepare_data(self, cfg: DistillConfig, env: DistEnv) -> RunData:
        """The corpus minus the validation/test images of `exclude_eval_splits` (both seg and cls splits)."""
        exclude = eval_images_of(cfg.exclude_eval_splits, cfg.eval_split_seed)
        data = prepare_data(cfg, env, exclude=exclude or None)
        if cfg.exclude_eval_splits:
            log.info("left out %d frame(s): images of the validation/test splits of %s", len(data.corpus.excluded),
                     ", ".join(cfg.exclude_eval_splits))
        return data

    def train_dataset(self, frames: list, cfg: DistillConfig) -> Dataset:
        """The dataset the batch plan indexes with (frame index, augmentation seed)."""
        return AugmentedFrames(frames, cfg.image_size, cfg.aug)

    @abstractmethod
    def build_models(self, cfg: DistillConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
        """(frozen teacher, trainable student) on `device`."""

    def loss(self, teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Loss of one micro-batch; `teacher(x)` and `student(x)` also give the tokens the held-out R² compares."""
        return token_mse(student(images), teacher(images))

    def eval_tokens(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """B x N x D tokens of a model's output on held-out frames, for the R² of student vs teacher."""
        return model(images)

    def fingerprint(self, cfg: DistillConfig) -> dict:
        """Facts beyond the config that must not change across --resume (e.g. the teacher weights' sha256)."""
        path = Path(cfg.teacher_weights)
        return {"teacher_weights_sha256": sha256_file(path) if path.is_file() else cfg.teacher_weights}

    @abstractmethod
    def save(self, run_dir: Path, model: nn.Module, cfg: DistillConfig, teacher: nn.Module, summary: dict) -> None:
        """Write the run's result (student weights + card) into RUN_DIR."""


class TokenDistillation(DistillMethod):
    """`pocus distill`: ViT teacher tokens of two blocks vs the projected CNN student map, token-wise MSE."""

    name = "token-mse"

    def build_models(self, cfg: DistillConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
        return build_models(cfg, device)

    def save(self, run_dir: Path, model: nn.Module, cfg: DistillConfig, teacher: nn.Module, summary: dict) -> None:
        extra = {
            "origin": "pocus distill",
            "teacher": cfg.teacher,
            "teacher_weights": cfg.teacher_weights,
            **self.fingerprint(cfg),
            "smoke_test_only": cfg.teacher_weights == RANDOM_WEIGHTS,
            "teacher_blocks": teacher.blocks,
            "aggregate": cfg.aggregate,
            "augmentation": cfg.aug,
            "training": summary,
            "config": cfg.to_dict(),
        }
        save_encoder(run_dir / "student.safetensors", model.encoder, cfg.student, cfg.image_size, extra)
