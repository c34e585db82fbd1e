"""`pocus kd`: stage 1 distils the teacher into the student on the transfer set (the shared distill loop with the
TaskKD method); stage 2 fine-tunes that student on the labelled data (the ordinary `pocus finetune` path).

RUN_DIR/kd/ holds stage 1 (checkpoints, metrics.jsonl, student.safetensors + card); RUN_DIR itself ends up as an
ordinary finetune output (model.safetensors + model.json, metrics.json, splits.csv, per_image.csv), so
`pocus-export`, `pocus eval` and `pocus sweep` take it as is; RUN_DIR/kd.yaml records every kd setting.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import yaml

from ..distill.trainer import run_distillation
from ..finetune.train import FinetuneConfig, run_finetune
from ..io import atomic_write_text, sha256_file
from ..models.encoder_io import read_card
from .config import KDConfig
from .method import TaskKD

log = logging.getLogger(__name__)


def run_kd(cfg: KDConfig) -> dict:
    """Both stages; with --resume a finished stage 1 is reused and an interrupted one continues bit-exactly."""
    cfg.validate()
    run_dir = Path(cfg.out)
    stage1_cfg = dataclasses.replace(cfg, out=str(run_dir / "kd"))
    student = run_dir / "kd" / "student.safetensors"
    method = TaskKD(stage1_cfg)
    if cfg.resume and student.is_file():
        log.info("--resume: stage 1 already finished (%s); fine-tuning it", student)
        stage1 = read_card(student)["training"]
    else:
        stage1 = run_distillation(stage1_cfg, method)
        stage1["transfer_removed_val_test"] = method.excluded
    card = read_card(student)
    lineage = {"origin": "pocus kd", "teacher": card["teacher"], "transfer": card["transfer"],
               "kd_student_sha256": sha256_file(student),
               "kd_weights": {"output": cfg.output_weight, "hidden": cfg.hidden_weight, "temperature": cfg.temperature}}
    finetune = run_finetune(FinetuneConfig(
        task=cfg.task, data=cfg.labeled_data, out=str(run_dir), encoder=str(student), architecture=cfg.student,
        decoder_channels=cfg.decoder_channels, label_fraction=cfg.label_fraction, epochs=cfg.finetune_epochs,
        image_size=cfg.image_size, batch_size=cfg.finetune_batch_size, lr=cfg.finetune_lr, seed=cfg.seed,
        threads=cfg.threads, max_steps_per_epoch=cfg.finetune_max_steps_per_epoch, split_seed=cfg.split_seed,
        extra=lineage))
    atomic_write_text(run_dir / "kd.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return {"kd": stage1, "finetune": finetune, "transfer": card["transfer"], "teacher": card["teacher"]}
