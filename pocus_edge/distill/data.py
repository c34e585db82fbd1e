"""Decoded-frame cache of the training loader: each frame file is decoded once per process, not once per epoch.

`FrameCache()(ref)` returns exactly what `data.dataset.load_frame(ref)` returns (a 1 x H x W float tensor in
[0, 1]); it keeps the decoded 8-bit pixels (a quarter of the float size) until `max_bytes` are held, then decodes
the rest every time. Augmentation still runs per sample from the plan's seed, so batches are bit-identical with or
without the cache. Each data-loader worker holds its own cache; the trainer splits the budget between them.
"""

from __future__ import annotations

import torch

from ..data.corpus import FrameRef
from ..data.dataset import decode_frame, to_unit_float

FRAME_CACHE_BYTES = 1 << 30  # per run: 1 GiB of 8-bit pixels (~16,000 frames of 256 x 256)


class FrameCache:
    """Callable frame loader with a byte budget: cache(ref) == load_frame(ref), decoding each frame once."""

    def __init__(self, max_bytes: int = FRAME_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.hits = 0
        self.misses = 0
        self._pixels: dict[tuple[str, int | None, bool], torch.Tensor] = {}

    def __call__(self, ref: FrameRef) -> torch.Tensor:
        key = (ref.path, ref.frame, bool(ref.crop))
        pixels = self._pixels.get(key)
        if pixels is None:
            self.misses += 1
            pixels = decode_frame(ref)
            size = pixels.numel() * pixels.element_size()
            if self.held_bytes + size <= self.max_bytes:
                self._pixels[key] = pixels
                self.held_bytes += size
        else:
            self.hits += 1
        return to_unit_float(pixels)


def attach_frame_cache(dataset: object, num_workers: int, max_bytes: int = FRAME_CACHE_BYTES) -> bool:
    """Give a training dataset that loads through `.load` (AugmentedFrames and kin) a cache; False if it has none."""
    if not callable(getattr(dataset, "load", None)):
        return False
    dataset.load = FrameCache(max_bytes // max(1, num_workers))  # type: ignore[attr-defined]
    return True
