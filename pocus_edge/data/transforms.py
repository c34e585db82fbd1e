"""Augmentation presets for distillation, driven by an explicit torch.Generator.

Every random choice comes from the generator passed in, so a sample's augmentation is a pure
function of its seed: resumed runs and any number of data-loader workers see identical batches.

- `ultrasound` (R50-Distill-US): random resized crop with moderate zoom (scale 0.5-1), horizontal
  flip, mild Gaussian blur, grayscale kept. Never a vertical flip (depth runs top to bottom in
  B-mode; flipping it makes anatomy impossible) and no colour jitter (B-mode has no colour).
- `natural` (R50-Distill-Default): the usual self-supervised natural-image recipe: aggressive
  crops (scale 0.25-1), horizontal flip, colour jitter, random grayscale, stronger blur,
  solarisation. On gray input, saturation and hue jitter have no effect; brightness and contrast do.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF

from ..runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD  # the one definition (torch-free, for the runtime)

AUG_PRESETS = ("ultrasound", "natural")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _chance(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def random_resized_crop(img: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Crop a random area fraction `scale` with aspect ratio in [3/4, 4/3], resize to size x size."""
    _, height, width = img.shape
    area = height * width
    for _ in range(10):
        target = area * _uniform(g, *scale)
        ratio = math.exp(_uniform(g, math.log(3 / 4), math.log(4 / 3)))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    return TF.resize(img, [size, size], antialias=True)


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(img, [kernel, kernel], [sigma, sigma])


def ultrasound_augment(img: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """1xHxW in [0,1] -> 1 x size x size: moderate zoom crop, h-flip, mild blur; stays grayscale."""
    out = random_resized_crop(img, size, (0.5, 1.0), g)
    if _chance(g, 0.5):
        out = TF.horizontal_flip(out)
    if _chance(g, 0.3):
        out = _blur(out, _uniform(g, 0.1, 1.0))
    return out.clamp(0.0, 1.0)


def natural_augment(img: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """1xHxW in [0,1] -> 3 x size x size with the natural-image recipe (colour jitter included)."""
    out = random_resized_crop(img, size, (0.25, 1.0), g).expand(3, -1, -1).contiguous()
    if _chance(g, 0.5):
        out = TF.horizontal_flip(out)
    if _chance(g, 0.8):
        out = TF.adjust_brightness(out, _uniform(g, 0.6, 1.4))
        out = TF.adjust_contrast(out, _uniform(g, 0.6, 1.4))
        out = TF.adjust_saturation(out, _uniform(g, 0.8, 1.2))
        out = TF.adjust_hue(out, _uniform(g, -0.1, 0.1))
    if _chance(g, 0.2):
        out = TF.rgb_to_grayscale(out, num_output_channels=3)
    if _chance(g, 0.5):
        out = _blur(out, _uniform(g, 0.1, 2.0))
    if _chance(g, 0.2):
        out = TF.solarize(out, 0.5)
    return out.clamp(0.0, 1.0)


def eval_transform(img: torch.Tensor, size: int) -> torch.Tensor:
    """Deterministic resize of the whole frame to size x size (held-out evaluation)."""
    return TF.resize(img, [size, size], antialias=True).clamp(0.0, 1.0)


def normalize(img: torch.Tensor) -> torch.Tensor:
    """Gray (1 channel) or RGB in [0,1] -> 3-channel ImageNet-normalised tensor, as teacher and student expect."""
    if img.shape[-3] == 1:
        img = img.expand(*img.shape[:-3], 3, *img.shape[-2:])
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype).view(3, 1, 1)
    return (img - mean) / std


def augment(preset: str, img: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Apply the named preset; returns an un-normalised tensor in [0,1]."""
    if preset == "ultrasound":
        return ultrasound_augment(img, size, g)
    if preset == "natural":
        return natural_augment(img, size, g)
    raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {AUG_PRESETS}")
