"""What every target module receives and returns: ExportRequest in, TargetResult out; ExportConfig is what the
user asked for (the CLI's flags), which export() resolves into an ExportRequest.

A target module exposes `NAME`, `PRECISIONS`, `EXTRA` (the pip extra it needs), `check_available()`
and `convert(request, workdir) -> TargetResult`. The bundle writer, parity and manifest are shared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import PocusError
from ..models.tasks import TaskSpec
from .data import ImageSet


class ExportError(PocusError):
    """The model could not be converted, or the converted model failed its checks."""


class MissingExtra(ExportError):
    """A converter package is not installed."""


@dataclass
class ExportConfig:
    """What the user asked `export` for (the CLI's flags, the Python API's arguments), before resolution.

    `options` holds the per-target options of the capability table (targets.py: --nhwc, --io, --explain, the
    model record...); `resolve_options` checks them against the target and precision and fills the defaults.
    """

    model: str
    target: str
    precision: str = "fp32"
    out: str | Path | None = None
    image_size: int | None = None
    calib_data: str | Path | None = None
    parity_data: str | Path | None = None
    dynamic_batch: bool = False
    raw_input: bool = False
    parity: bool = True
    num_calib: int | None = None
    num_parity: int = 32
    parity_thresholds: dict[str, float] | None = None
    overwrite: bool = False
    fold_upsampling: bool | None = None  # None: the table's default (fp32/fp16 on, int8 off)
    sign_key: str | Path | None = None
    measurements: str | list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: str, target: str, precision: str = "fp32", out: str | Path | None = None,
           **kwargs: Any) -> ExportConfig:
        """The config from `export()`'s keyword arguments: named fields as such, the rest are target options."""
        names = {f.name for f in fields(cls)} - {"options"}
        given = {k: v for k, v in kwargs.items() if k in names}
        return cls(model, target, precision, out, **given,
                   options={k: v for k, v in kwargs.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (paths as strings), e.g. to record what was asked."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class ExportRequest:
    """The resolved export job, shared by all targets."""

    model: nn.Module  # fp32 eval model taking normalised 3-channel input
    spec: TaskSpec
    precision: str
    image_size: int
    raw_input: bool
    dynamic_batch: bool
    calibration: ImageSet | None
    preprocessing: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    parity_images: ImageSet | None = None  # held-out frames: int8 searches its float layers on them
    parity_thresholds: dict[str, list] | None = None  # {metric: [direction, value]} the bundle must meet
    progress: Any = None  # progress.ExportProgress: stages and item counts (calibration, search); None: silent

    @property
    def output_meaning(self) -> str:
        return {"segmentation": "mask_logits", "classification": "logits", "embedding": "embedding"}[self.spec.task]


@dataclass
class TargetResult:
    """Files a target wrote into the work folder and how to describe them in the manifest."""

    model_file: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    extra_files: list[str] = field(default_factory=list)
    target_options: dict[str, Any] = field(default_factory=dict)
    postprocessing: dict[str, Any] | None = None  # overrides the task default (e.g. softmax inside Core ML)
    parity_skip_reason: str | None = None  # set when this machine cannot run the model (e.g. Core ML on Linux)
    tool_versions: dict[str, str] = field(default_factory=dict)


def require(module: str, extra: str = "export") -> Any:
    """Import a converter package or raise MissingExtra naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{module} is not installed ({exc.msg}); install it with: pip install 'pocus-edge[{extra}]'")


def version_of(dist: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
