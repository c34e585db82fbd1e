"""KDConfig: every setting of `pocus kd`; the distillation stage reuses DistillConfig's loop settings.

`data` holds the transfer-set folders (unlabeled images read by the distill corpus loader); `labeled_data` the
labelled folder of stage 2 (and of the test split that is kept out of the transfer set).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..distill.config import DistillConfig
from ..distill.setup import RESUME_FIELDS
from ..errors import ConfigError
from ..task_names import TRAINABLE_TASKS

KD_RESUME_FIELDS = tuple(f for f in RESUME_FIELDS if f not in ("teacher", "teacher_kwargs", "blocks", "aggregate",
                                                              "teacher_norm", "head_hidden")) + (
    "task", "decoder_channels", "output_weight", "hidden_weight", "temperature", "transfer_expand", "labeled_data",
    "label_fraction", "split_seed")


@dataclass
class KDConfig(DistillConfig):
    """Settings of one `pocus kd` run; saved as RUN_DIR/kd/config.yaml (stage 1) and RUN_DIR/config.yaml (stage 2)."""

    task: str = "segmentation"
    teacher_checkpoint: str = ""
    labeled_data: str = ""
    student: str = "mobilenetv3_large_100"
    decoder_channels: list[int] | None = None
    output_weight: float = 0.2  # TS-KD's best setting
    hidden_weight: float = 0.1
    temperature: float = 0.0  # classification only: > 0 uses KL(softmax/T) x T² instead of logit MSE
    transfer_expand: int = 0  # augmented variants added per transfer image (rotation, scale, shear)
    label_fraction: float = 1.0
    split_seed: int | None = None  # seed of the labelled split (and of the val/test images kept out); None: seed
    finetune_epochs: int = 20
    finetune_batch_size: int = 16
    finetune_lr: float | None = None
    finetune_max_steps_per_epoch: int = 0
    # loop settings with KD defaults (a CNN student from random init on a small transfer set)
    batch_size: int = 32
    epochs: int = 20
    lr: float = 1e-3
    mixup: bool = False
    save_every: str = "1ep"
    extra: dict = field(default_factory=dict)

    def validate(self) -> KDConfig:
        if self.task not in TRAINABLE_TASKS.values():
            raise ConfigError(f"task {self.task!r}: use seg or cls")
        if not self.teacher_checkpoint:
            raise ConfigError("--teacher is required: a model.safetensors written by pocus finetune")
        if not self.labeled_data:
            raise ConfigError("--data is required: the labelled folder (stage 2, and its test split is kept out of "
                              "the transfer set)")
        self.teacher_weights = self.teacher_checkpoint  # the loop's fingerprint and card read this field
        super().validate()
        if self.output_weight < 0 or self.hidden_weight < 0 or self.output_weight + self.hidden_weight == 0:
            raise ConfigError(f"--output-weight {self.output_weight} / --hidden-weight {self.hidden_weight}: both "
                              "must be >= 0 and not both 0")
        if self.temperature < 0 or (self.temperature > 0 and self.task != "classification"):
            raise ConfigError(f"--temperature {self.temperature}: must be >= 0, and > 0 only for kd cls")
        if not 0 <= self.transfer_expand <= 64:
            raise ConfigError(f"--transfer-expand {self.transfer_expand}: must be 0..64 variants per image")
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"--label-fraction {self.label_fraction}: must lie in (0, 1]")
        for name in ("finetune_epochs", "finetune_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        return self
