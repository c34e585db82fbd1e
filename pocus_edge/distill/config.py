"""DistillConfig: every setting of `pocus distill`, filled from defaults < --config YAML < CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..data.transforms import AUG_PRESETS
from ..errors import ConfigError
from ..models.teacher import AGGREGATIONS

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class DistillConfig:
    """Settings of one distillation run; saved as RUN_DIR/config.yaml."""

    data: list[str] = field(default_factory=list)
    out: str = ""
    teacher: str = "vit_base_patch16_dinov3"
    teacher_weights: str = ""
    teacher_kwargs: dict = field(default_factory=dict)  # passed to timm.create_model (e.g. depth for smoke tests)
    blocks: list[int] = field(default_factory=list)  # empty = the last two blocks
    aggregate: str = "concat"
    teacher_norm: bool = True  # apply the ViT's final LayerNorm to the intermediate tokens
    student: str = "resnet50"
    head_hidden: int = 4096
    image_size: int = 256
    batch_size: int = 512  # global batch per optimizer step (all processes, all accumulation steps)
    accum_steps: int = 0  # 0 = auto: split so that each process's micro-batch is at most max_micro_batch
    max_micro_batch: int = 64
    epochs: int = 1000
    max_steps: int = 0  # > 0 stops after this many optimizer steps (and sets the schedule length)
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_steps: int = -1  # -1 = 5% of the schedule
    clip_grad: float = 0.0  # 0 = no clipping
    aug: str = "ultrasound"
    mixup: bool = True
    precision: str = "auto"  # auto = bf16 autocast on a bf16-capable GPU, fp32 otherwise
    save_every: str = "1ep"  # "N" optimizer steps or "Nep" epochs
    keep_last: int = 3
    log_every: int = 10
    eval_every: int = 0  # 0 = at start, at each checkpoint and at the end
    held_out_fraction: float = 0.05
    max_held_out: int = 256
    max_video_frames: int = 32
    num_workers: int = 2
    seed: int = 0
    threads: int = 0  # 0 = leave torch's default
    resume: bool = False
    quiet: bool = False

    def validate(self) -> DistillConfig:
        """Raise ConfigError for values that would fail later or silently do the wrong thing."""
        if not self.data:
            raise ConfigError("no --data given: pass one or more folders of ultrasound images")
        if not self.out:
            raise ConfigError("no --out given: pass the run folder for checkpoints and the student")
        if not self.teacher_weights:
            raise ConfigError(
                "--teacher-weights is required: a local DINOv3 .safetensors/.pth file, or 'random' for smoke tests"
            )
        if self.image_size <= 0 or self.image_size % 32:
            raise ConfigError(f"--image-size {self.image_size}: must be a positive multiple of 32 (e.g. 224, 256)")
        if self.aug not in AUG_PRESETS:
            raise ConfigError(f"--aug {self.aug!r}: choose one of {', '.join(AUG_PRESETS)}")
        if self.aggregate not in AGGREGATIONS:
            raise ConfigError(f"--aggregate {self.aggregate!r}: choose one of {', '.join(AGGREGATIONS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        for name in ("batch_size", "epochs", "keep_last", "log_every", "head_hidden", "max_micro_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("accum_steps", "max_steps", "num_workers", "eval_every", "threads", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise ConfigError(f"--held-out-fraction {self.held_out_fraction}: must be in [0, 1)")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: must be positive")
        parse_save_every(self.save_every)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_save_every(text: str) -> tuple[int, str]:
    """'500' -> (500, 'steps'); '2ep' -> (2, 'epochs')."""
    raw = str(text).strip().lower()
    unit = "epochs" if raw.endswith("ep") else "steps"
    number = raw[:-2] if unit == "epochs" else raw
    if not number.isdigit() or int(number) <= 0:
        raise ConfigError(f"--save-every {text!r}: use a positive step count (500) or epochs (1ep)")
    return int(number), unit


def load_config(yaml_path: Path | None, overrides: dict) -> DistillConfig:
    """Merge defaults, the YAML file (if any) and explicitly given CLI values (None = not given)."""
    known = {f.name for f in fields(DistillConfig)}
    values: dict = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {path}: not valid YAML ({exc})")
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(loaded).__name__}")
        loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise ConfigError(f"--config {path}: unknown setting(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None and v != [] and v != ()})
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]
    values["data"] = [str(d) for d in values.get("data", [])]
    try:
        return DistillConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}")
