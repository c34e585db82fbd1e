"""The target table: one module per target, aliases, and did-you-mean errors for unknown names."""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from ..errors import ConfigError

TARGETS = {"onnx": "onnx", "tflite": "tflite", "coreml": "coreml", "tensorrt": "tensorrt"}
ALIASES = {"trt": "tensorrt", "mlpackage": "coreml", "mlmodel": "coreml", "litert": "tflite", "ort": "onnx"}
PRECISIONS = ("fp32", "fp16", "int8")


def canonical_target(name: str) -> str:
    """Resolve aliases; unknown names raise ConfigError listing the valid ones (with a did-you-mean)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in TARGETS:
        return key
    choices = sorted(TARGETS) + sorted(ALIASES)
    close = difflib.get_close_matches(key, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"--target {name!r} is unknown.{hint} Valid targets: {', '.join(TARGETS)} "
        f"(aliases: {', '.join(f'{a}->{t}' for a, t in ALIASES.items())})"
    )


def target_module(name: str) -> ModuleType:
    """The module implementing a (canonical or alias) target."""
    return importlib.import_module(f"{__package__}.{TARGETS[canonical_target(name)]}")


def check_precision(target: str, precision: str) -> str:
    """Validate the precision for the target; raises ConfigError naming the supported ones."""
    p = precision.strip().lower()
    supported = target_module(target).PRECISIONS
    if p not in supported:
        raise ConfigError(
            f"--precision {precision!r} is not available for {target}; choose one of {', '.join(supported)}")
    return p
