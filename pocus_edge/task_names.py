"""The task names, torch-free: what a manifest or card says (`segmentation`, ...) and what a command takes (`seg`)."""

from __future__ import annotations

TASKS = ("segmentation", "classification", "embedding")
TRAINABLE_TASKS = {"seg": "segmentation", "cls": "classification"}  # the TASK argument of finetune, sweep and kd
TASK_ARGUMENT_OF = {name: short for short, name in TRAINABLE_TASKS.items()}  # "segmentation" -> "seg"
