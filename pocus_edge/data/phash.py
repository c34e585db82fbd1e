"""Perceptual hashes of frames and near-duplicate search (cine loops repeat nearly the same frame).

`phash`: the usual 64-bit DCT hash, in numpy only: the frame is resized to 32 x 32 (PIL, bilinear with its
antialiasing filter), a 2-D DCT-II is taken, and each of the 8 x 8 lowest-frequency coefficients becomes one bit:
1 where it is above the median of those 64. Speckle noise and small intensity changes move few bits; another view
moves about half. `NearDuplicates` is a greedy, order-dependent search: a frame whose hash lies within
`threshold` bits of a frame already *kept* is a near duplicate of the closest such frame (the earliest on a tie),
otherwise it is kept. Kept frames are therefore pairwise more than `threshold` bits apart, and a slowly panning
loop is not chained into one group. Candidates come from a multi-index (pigeonhole: two hashes within t bits agree
exactly on at least one of t + 1 bit ranges), so the search does not compare every pair.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIZE = 8
_SIDE = 32
MAX_THRESHOLD = 32


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT = _dct_matrix(_SIDE)


def phash(pixels: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 2-D uint8 frame, as a Python int (bit 63 = coefficient (0, 0))."""
    small = np.asarray(Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize((_SIDE, _SIDE),
                                                                                  Image.Resampling.BILINEAR),
                       dtype=np.float64)
    coeffs = (_DCT @ small @ _DCT.T)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = coeffs > np.median(coeffs)
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def _ranges(threshold: int) -> list[tuple[int, int]]:
    """threshold + 1 contiguous bit ranges (shift, width) covering 64 bits, widths differing by at most one."""
    parts = threshold + 1
    widths = [64 // parts + (1 if i < 64 % parts else 0) for i in range(parts)]
    out, shift = [], 0
    for width in widths:
        out.append((shift, width))
        shift += width
    return out


class NearDuplicates:
    """Greedy near-duplicate search over hashes added in order; `add(h)` -> (index of kept match, bits) or None."""

    def __init__(self, threshold: int):
        if not 0 <= threshold <= MAX_THRESHOLD:
            raise ValueError(f"threshold {threshold} outside 0..{MAX_THRESHOLD}")
        self.threshold = threshold
        self.ranges = _ranges(threshold)
        self.kept: list[int] = []  # hashes of kept frames
        self.kept_index: list[int] = []  # their positions in the order of add()
        self.buckets: list[dict[int, list[int]]] = [{} for _ in self.ranges]
        self.count = 0

    def add(self, value: int) -> tuple[int, int] | None:
        """Register the next frame's hash; its near duplicate (position, Hamming distance) or None if kept."""
        position = self.count
        self.count += 1
        candidates: set[int] = set()
        keys = [(value >> shift) & ((1 << width) - 1) for shift, width in self.ranges]
        for bucket, key in zip(self.buckets, keys, strict=True):
            candidates.update(bucket.get(key, ()))
        best: tuple[int, int] | None = None
        for slot in sorted(candidates):
            bits = hamming(value, self.kept[slot])
            if bits <= self.threshold and (best is None or bits < best[1]):
                best = (self.kept_index[slot], bits)
        if best is not None:
            return best
        slot = len(self.kept)
        self.kept.append(value)
        self.kept_index.append(position)
        for bucket, key in zip(self.buckets, keys, strict=True):
            bucket.setdefault(key, []).append(slot)
        return None


def near_duplicates(hashes: list[int], threshold: int) -> list[tuple[int, int] | None]:
    """For each hash in order: None (kept) or (position of the kept near duplicate, Hamming distance)."""
    search = NearDuplicates(threshold)
    return [search.add(h) for h in hashes]
