"""`--transfer-expand N`: N fixed augmented variants of each transfer image, as TS-KD grew small transfer sets.

The training list holds the n base frames 1 + N times; item k * n + i is variant k of frame i. Variant 0 is the
frame itself; variant k > 0 applies a fixed random rotation (±15°), scale (0.85-1.15), shear (±8°) and shift (±5 %),
drawn from a generator seeded by (i, k) only, so a variant is the same image in every epoch, worker and resumed run.
The usual per-sample augmentation (crop, flip, blur) then applies on top.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from ..data.dataset import AugmentedFrames
from ..data.transforms import augment, normalize


def affine_variant(img: torch.Tensor, frame_index: int, variant: int) -> torch.Tensor:
    """The fixed affine variant `variant` (>= 1) of a 1 x H x W frame; zeros fill what moves in from outside."""
    g = torch.Generator().manual_seed(1_000_003 * (frame_index + 1) + 7919 * variant)
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    _, h, w = img.shape
    return TF.affine(img, angle=u(-15, 15), translate=[round(u(-0.05, 0.05) * w), round(u(-0.05, 0.05) * h)],
                     scale=u(0.85, 1.15), shear=[u(-8, 8), 0.0], interpolation=TF.InterpolationMode.BILINEAR)


class ExpandedFrames(AugmentedFrames):
    """Training frames with fixed affine variants: dataset[(k * n + i, seed)] is variant k of frame i, augmented."""

    def __init__(self, frames: list, image_size: int, preset: str, expand: int):
        super().__init__(frames, image_size, preset)
        self.base = len(frames) // (1 + expand)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, seed = key
        variant, frame_index = divmod(index, self.base)
        img = self.load(self.frames[index])
        if variant:
            img = affine_variant(img, frame_index, variant)
        g = torch.Generator().manual_seed(int(seed))
        return normalize(augment(self.preset, img, self.image_size, g))
