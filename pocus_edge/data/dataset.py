"""Torch datasets over corpus frames: augmented for training, resized for held-out evaluation.

Training items are addressed by `(frame_index, sample_seed)` pairs that the batch plan supplies,
so augmentation does not depend on worker processes, their order, or where a run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .corpus import FrameRef
from .readers import read_frame
from .transforms import augment, eval_transform, normalize


def decode_frame(ref: FrameRef) -> torch.Tensor:
    """Decode a frame to its H x W 8-bit pixels (overlay-cropped when the corpus asked for it)."""
    if ref.crop:
        from .overlay import read_cropped

        pixels = read_cropped(Path(ref.path), ref.frame)
    else:
        pixels = read_frame(Path(ref.path), ref.frame)
    return torch.from_numpy(np.array(pixels, copy=True))


def to_unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """H x W 8-bit pixels -> 1 x H x W float tensor in [0, 1] (a new tensor: cached pixels stay untouched)."""
    return pixels.to(torch.float32, copy=True).div_(255.0).unsqueeze(0)


def load_frame(ref: FrameRef) -> torch.Tensor:
    """Decode a frame to a 1xHxW float tensor in [0, 1]."""
    return to_unit_float(decode_frame(ref))


class AugmentedFrames(Dataset):
    """Training frames: dataset[(i, seed)] -> normalised 3 x S x S tensor augmented with that seed."""

    def __init__(self, frames: list[FrameRef], image_size: int, preset: str):
        self.frames = frames
        self.image_size = image_size
        self.preset = preset
        self.load: Callable[[FrameRef], torch.Tensor] = load_frame  # the trainer swaps in a distill.data.FrameCache

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, seed = key
        g = torch.Generator().manual_seed(int(seed))
        return normalize(augment(self.preset, self.load(self.frames[index]), self.image_size, g))


class EvalFrames(Dataset):
    """Held-out frames: dataset[i] -> normalised 3 x S x S tensor of the whole frame, no augmentation."""

    def __init__(self, frames: list[FrameRef], image_size: int):
        self.frames = frames
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        return normalize(eval_transform(load_frame(self.frames[index]), self.image_size))
