"""Training checkpoints: atomic writes, a sha256 sidecar, keep-last-K, newest-valid lookup for --resume.

A checkpoint is RUN_DIR/checkpoints/step-00001234.pt (torch.save of tensors and plain Python
values only, read back with weights_only=True) plus step-00001234.pt.sha256 written after it. A
file without a matching sidecar (a crash mid-write, a truncated copy) is not valid and is skipped.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write, atomic_write_text, sha256_file

log = logging.getLogger(__name__)
NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import ast

    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, payload: dict, keep_last: int) -> Path:
    """Write the checkpoint for `step` atomically, then its hash, then prune older ones beyond keep_last."""
    folder = checkpoint_dir(run_dir)
    path = folder / f"step-{step:08d}.pt"
    atomic_write(path, lambda p: torch.save(payload, p))
    atomic_write_text(path.with_name(path.name + ".sha256"), sha256_file(path) + "\n")
    for old in list_checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files sorted by step (valid or not)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def is_valid(path: Path) -> bool:
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar.is_file() and sidecar.read_text().strip() == sha256_file(path)


def load_latest_valid(run_dir: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint whose hash matches and which loads; invalid ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        if not is_valid(path):
            log.warning("skipping %s: incomplete or corrupt (hash sidecar missing or different)", path)
            continue
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a valid hash of an unreadable file: report and fall back
            log.warning("skipping %s: cannot be loaded (%s)", path, exc)
    return None
