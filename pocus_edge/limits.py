"""Bounds of every numeric option in one table, and the checks that apply them before any work starts.

A value outside its bound would either fail late (after a model was built or data was read) or exhaust
the machine (`--threads 100000` once made 9,203 threads and 16.5 GB of memory). Every command checks its
options here, so the limits and their messages are the same everywhere: `check("threads", 8, "--threads")`.
`check_out` refuses an output path that cannot become a folder before anything is written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


def _per_cpu(factor: int, cap: int) -> Callable[[], int]:
    """A bound that scales with this host's CPU count: factor x cores, at most cap."""
    return lambda: min(cap, factor * (os.cpu_count() or 1))


@dataclass(frozen=True)
class Bound:
    """Inclusive range [low, high] (high may depend on the host); `open_low` excludes low itself."""

    low: float
    high: float | Callable[[], float]
    multiple: int = 1
    open_low: bool = False
    integer: bool = True
    note: str = ""

    def upper(self) -> float:
        return self.high() if callable(self.high) else self.high


BOUNDS: dict[str, Bound] = {
    "threads": Bound(0, _per_cpu(4, 256), note="0 = the library default; at most 4 x this host's CPU cores"),
    "runtime_threads": Bound(1, _per_cpu(4, 256), note="at most 4 x this host's CPU cores"),
    "num_workers": Bound(0, _per_cpu(4, 64), note="data-loader processes; at most 4 x this host's CPU cores"),
    "image_size": Bound(32, 2048, multiple=32, note="the encoders downsample by 32"),
    "batch_size": Bound(1, 1024),
    "global_batch_size": Bound(1, 65536, note="split into micro-batches by accumulation"),
    "micro_batch": Bound(1, 1024),
    "bench_batch": Bound(1, 256),
    "epochs": Bound(1, 100_000),
    "steps": Bound(0, 10**9, note="0 = no limit"),
    "num_calib": Bound(1, 100_000),
    "num_parity": Bound(1, 10_000),
    "per_dataset": Bound(2, 10_000),
    "runs": Bound(1, 1_000_000),
    "warmup": Bound(0, 100_000),
    "keep_last": Bound(1, 1000),
    "label_fraction": Bound(0.0, 1.0, open_low=True, integer=False),
    "held_out_fraction": Bound(0.0, 0.5, integer=False, note="0 = no held-out R² check"),
    "learning_rate": Bound(0.0, 10.0, open_low=True, integer=False),
}


def _range_text(bound: Bound) -> str:
    low = f"> {bound.low}" if bound.open_low else f">= {bound.low}"
    text = f"{low} and <= {bound.upper()}" if bound.open_low else f"between {bound.low} and {bound.upper()}"
    if bound.multiple > 1:
        text += f" and a multiple of {bound.multiple}"
    return text + (f" ({bound.note})" if bound.note else "")


def check(name: str, value, flag: str | None = None):
    """Return `value` if it lies within BOUNDS[name], else raise ConfigError naming the flag and the range."""
    bound = BOUNDS[name]
    flag = flag or "--" + name.replace("_", "-")
    kind = "an integer" if bound.integer else "a number"
    numeric = isinstance(value, int) or (not bound.integer and isinstance(value, float))
    if isinstance(value, bool) or not numeric:
        raise ConfigError(f"{flag} {value!r}: expected {kind} {_range_text(bound)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag} {value}: must be a finite number {_range_text(bound)}")
    too_low = value <= bound.low if bound.open_low else value < bound.low
    if too_low or value > bound.upper() or (bound.multiple > 1 and value % bound.multiple):
        raise ConfigError(f"{flag} {value}: must be {_range_text(bound)}")
    return value


def check_out(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output folder that is an existing file, sits under a file, or lies in a folder we cannot write.

    Nothing is created: commands make OUT only when they are about to write into it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is an existing file; {flag} takes a folder, choose another path")
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder; choose another {flag}")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {flag} {path}: {parent} is not writable (permission denied); "
                          f"choose another {flag}")
    return path
