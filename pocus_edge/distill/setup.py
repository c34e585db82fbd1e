"""Build everything a distillation run needs from its config: data, models, optimizer, schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from ..data.corpus import Corpus, FrameRef, scan_corpus, split_by_group
from ..errors import ConfigError, DataError
from ..models.student import DistillStudent, ProjectionHead, build_student, feature_channels
from ..models.teacher import RANDOM_WEIGHTS, Teacher, build_teacher
from .config import DistillConfig
from .ddp import DistEnv
from .objective import lr_factor
from .plan import BatchPlan, resolve_accum_steps

log = logging.getLogger(__name__)


@dataclass
class RunData:
    corpus: Corpus
    train: list[FrameRef]
    held_out: list[FrameRef]
    plan: BatchPlan
    total_steps: int


def prepare_data(cfg: DistillConfig, env: DistEnv) -> RunData:
    """Scan and split the corpus and fix the batch plan; raises DataError before any model is built."""
    corpus = scan_corpus([Path(d) for d in cfg.data], max_video_frames=cfg.max_video_frames)
    train, held_out = split_by_group(corpus.frames, cfg.held_out_fraction, cfg.seed)
    held_out = held_out[: cfg.max_held_out]
    if len(train) < cfg.batch_size:
        raise DataError(
            f"the training split has {len(train)} image(s) (of {len(corpus.frames)} usable) but --batch-size is "
            f"{cfg.batch_size}; pass --batch-size {max(1, len(train))} or less, or add data"
        )
    try:
        accum = resolve_accum_steps(cfg.batch_size, env.world_size, cfg.accum_steps, cfg.max_micro_batch)
    except ValueError as exc:
        raise ConfigError(str(exc))
    plan = BatchPlan(len(train), cfg.batch_size, env.world_size, env.rank, accum, cfg.seed)
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * plan.steps_per_epoch
    return RunData(corpus, train, held_out, plan, total)


def build_models(cfg: DistillConfig, device: torch.device) -> tuple[Teacher, DistillStudent]:
    """Teacher (frozen) and student + projection head, seeded so every rank and every rerun builds the same."""
    torch.manual_seed(cfg.seed)  # a random teacher must be the same teacher on every rank and after --resume
    if cfg.teacher_weights == RANDOM_WEIGHTS:
        log.warning("--teacher-weights random: the teacher is untrained; the result is for smoke tests only")
    teacher = build_teacher(
        cfg.teacher, cfg.teacher_weights, cfg.image_size, cfg.blocks or None, cfg.aggregate, cfg.teacher_norm,
        cfg.teacher_kwargs,
    )
    torch.manual_seed(cfg.seed)
    encoder = build_student(cfg.student)
    channels, _ = feature_channels(encoder, cfg.image_size)
    head = ProjectionHead(channels, teacher.out_dim, cfg.head_hidden)
    student = DistillStudent(encoder, head, teacher.grid_size(cfg.image_size))
    return teacher.to(device), student.to(device)


def build_optimizer(cfg: DistillConfig, model: nn.Module, total_steps: int):
    """AdamW with weight decay on weights only (not biases or norm parameters) + warm-up/cosine LambdaLR."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.999),
    )
    warmup = cfg.warmup_steps if cfg.warmup_steps >= 0 else int(0.05 * total_steps)
    factor = partial(lr_factor, total_steps=total_steps, warmup_steps=warmup, min_ratio=cfg.min_lr / cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def autocast_dtype(cfg: DistillConfig, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 autocast dtype, or None for fp32; 'auto' picks bf16 only on a bf16-capable GPU."""
    if cfg.precision == "fp32":
        return None
    if cfg.precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float16


RESUME_FIELDS = ("teacher", "blocks", "aggregate", "teacher_norm", "student", "head_hidden", "image_size",
                 "batch_size", "seed", "aug", "mixup", "held_out_fraction", "data")


def check_resume_compatible(saved: dict, cfg: DistillConfig) -> None:
    """Refuse to resume with settings that would change the model or the data order."""
    current = cfg.to_dict()
    changed = [f for f in RESUME_FIELDS if saved.get(f) != current.get(f)]
    if changed:
        detail = ", ".join(f"{f}: {saved.get(f)!r} -> {current.get(f)!r}" for f in changed)
        raise ConfigError(f"--resume: the run in {cfg.out} was started with different settings ({detail}); "
                          "use the original settings or a new --out")
