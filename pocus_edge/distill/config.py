"""DistillConfig: every setting of `pocus distill`, filled from defaults < --config YAML < CLI flags."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..data.transforms import AUG_PRESETS
from ..errors import ConfigError
from ..limits import check, check_out
from ..models.teacher import AGGREGATIONS

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class DistillConfig:
    """Settings of one distillation run; saved as RUN_DIR/config.yaml."""

    data: list[str] = field(default_factory=list)
    data_list: str = ""  # frame list (pocus corpus select): train only on these frames of `data`; "" = all frames
    crop_overlays: bool = False  # crop frames to the ultrasound region (data/overlay.py): no burned-in text
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
    held_out_data: list[str] = field(default_factory=list)  # R² on these folders' frames instead of a split of data
    max_video_frames: int = 32
    num_workers: int = 2
    seed: int = 0
    threads: int = 0  # 0 = leave torch's default
    exclude_eval_splits: list[str] = field(default_factory=list)  # labelled folders whose val/test images to drop
    eval_split_seed: int = 0  # the --seed of the downstream fine-tunes those splits belong to
    objective: str = "token-mse"  # token-mse (the paper's eq. 6) | masked-consistency (distill/masked.py)
    # masked-consistency only (adapted from TinyUSFM; distill/masked.py says what each does):
    mask_ratio: float = 0.6  # share of mask_block-px squares blanked in the spatial view
    mask_block: int = 32
    ring_mask_ratio: float = 0.5  # share of the frequency rings zeroed in the frequency view
    mask_rings: int = 8
    ring_keep_radius: float = 0.1  # protected low-frequency centre, share of the corner frequency
    consistency_power: float = 1.0  # 0 = every sample weighs the same
    feature_weight: float = 1.0
    recon_weight: float = 1.0
    recon_hidden: int = 256  # reconstruction decoder width
    resume: bool | str = False  # True: continue from a valid checkpoint or fail; "auto": also start fresh
    quiet: bool = False

    def validate(self) -> DistillConfig:
        """Raise ConfigError for values that would fail later or silently do the wrong thing."""
        for f in fields(self):
            setattr(self, f.name, check_type(f.name, getattr(self, f.name), "setting", type(self)))
        if self.resume not in (True, False, "auto"):
            raise ConfigError(f"resume: {self.resume!r}: use true, false or auto")
        if not self.data:
            raise ConfigError("no --data given: pass one or more folders of ultrasound images")
        if self.data_list and not Path(self.data_list).is_file():
            raise ConfigError(f"--data-list {self.data_list}: no such file; pass the list written by "
                              "`pocus corpus select --out`")
        for folder in self.held_out_data:
            if not Path(folder).exists():
                raise ConfigError(f"--held-out-data {folder}: no such folder; pass a folder of ultrasound frames to "
                                  "measure token R² on (never trained on), or drop the option to hold out a split "
                                  "of --data")
        if not self.out:
            raise ConfigError("no --out given: pass the run folder for checkpoints and the student")
        if not self.teacher_weights:
            raise ConfigError(
                "--teacher-weights is required: a local DINOv3 .safetensors/.pth file, or 'random' for smoke tests"
            )
        if self.aug not in AUG_PRESETS:
            raise ConfigError(f"--aug {self.aug!r}: choose one of {', '.join(AUG_PRESETS)}")
        if self.aggregate not in AGGREGATIONS:
            raise ConfigError(f"--aggregate {self.aggregate!r}: choose one of {', '.join(AGGREGATIONS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        for name in ("log_every", "head_hidden", "max_held_out", "max_video_frames"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("eval_every", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        for name, bound in (("image_size", "image_size"), ("batch_size", "global_batch_size"), ("epochs", "epochs"),
                            ("max_micro_batch", "micro_batch"), ("accum_steps", "steps"), ("max_steps", "steps"),
                            ("keep_last", "keep_last"), ("num_workers", "num_workers"), ("threads", "threads"),
                            ("held_out_fraction", "held_out_fraction"), ("lr", "learning_rate")):
            check(bound, getattr(self, name), "--" + name.replace("_", "-"))
        from .masked import check_settings
        from .trainer import OBJECTIVES  # both import this module

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        check_settings(self)
        parse_save_every(self.save_every)
        check_out(self.out)
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


def _type_name(hint) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "text", dict: "a mapping",
             list: "a list"}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0]).removeprefix('an ').removeprefix('a ')}s"
    return names.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _matches(value, hint):
    """(True, value as stored) if `value` fits the type hint; ints are taken for floats, nothing else is coerced."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(hint):
            ok, coerced = _matches(value, member)
            if ok:
                return True, coerced
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item)[0] for v in value), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    return isinstance(value, origin or hint), value


def check_type(name: str, value, where: str, config_class: type = DistillConfig):
    """`value` as DistillConfig stores it, or ConfigError naming the setting and the type it needs.

    YAML reads `batch_size: "8"` as text and `1e-4` (no dot) as text too; neither is guessed at.
    """
    hint = typing.get_type_hints(config_class)[name]
    if name == "save_every" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `save_every: 500` means 500 steps
    ok, coerced = _matches(value, hint)
    if ok:
        return coerced
    hint_text = ""
    if isinstance(value, str) and hint in (int, float):
        try:
            float(value)
            hint_text = "; write the number without quotes" + (" and with a dot (1.0e-4)" if "e" in value.lower()
                                                                 else "")
        except ValueError:
            pass
    raise ConfigError(f"{where}: {name} must be {_type_name(hint)}, got {value!r} ({type(value).__name__}){hint_text}")


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
        for key in ("data", "held_out_data"):
            if isinstance(loaded.get(key), str):
                loaded[key] = [loaded[key]]
        values.update({k: check_type(k, v, f"--config {path}") for k, v in loaded.items()})
    values.update({k: v for k, v in overrides.items() if v is not None and v != [] and v != ()})
    for key in ("data", "held_out_data"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
        values[key] = [str(d) for d in values.get(key, [])]
    try:
        return DistillConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}")
