"""`pocus distill --objective masked-consistency`: masked views, teacher consistency, reconstruction.

Adapted from TinyUSFM (see ../shared/papers/TINYUSFM.md; the authors published neither the loss weights nor the
exact weighting, so these are our settings, recorded in every run's config and card):

- Two masked views of each (mixed-up) input, made on pixels because a CNN has no mask tokens:
  a *spatial* view, `mask_ratio` of the `mask_block` x `mask_block` squares set to 0 (the normalised mean), and a
  *frequency* view, the 2-D FFT with `ring_mask_ratio` of `mask_rings` concentric rings zeroed outside a protected
  low-frequency centre of radius `ring_keep_radius` (share of the corner radius), then the inverse FFT.
- The frozen teacher sees the clean image and both views. Its per-sample consistency c = mean over tokens of the
  cosine between its spatial-view and frequency-view tokens gives a raw weight ((1 + c) / 2) ** consistency_power,
  divided by the micro-batch mean: a teacher equally consistent on every sample gives every sample weight 1.
- The student sees both views; its projected tokens regress the teacher's clean-view tokens (per-sample token MSE,
  weighted as above) and a light decoder on its final map reconstructs the clean image (L1):
  L = feature_weight * mean_b(w_b * d_b) + recon_weight * L1.
- Masks are drawn from the seed the loop gives each micro-batch (`batch_seed`: run seed, step, micro-batch, rank),
  so a resumed run draws the same masks as an uninterrupted one. The weights are normalised per process in DDP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.student import DistillStudent, feature_channels
from .config import DistillConfig
from .method import TokenDistillation
from .setup import RESUME_FIELDS, build_models

NAME = "masked-consistency"
# DistillConfig fields that only this objective reads (a --resume must not change them).
SETTINGS = ("mask_ratio", "mask_block", "ring_mask_ratio", "mask_rings", "ring_keep_radius", "consistency_power",
            "feature_weight", "recon_weight", "recon_hidden")


def _count(ratio: float, total: int) -> int:
    """round(ratio * total), halves rounded up (Python's round() would round 2.5 down to 2)."""
    return int(math.floor(ratio * total + 0.5))


def _pick(batch: int, total: int, count: int, g: torch.Generator) -> torch.Tensor:
    """B x total bool, exactly `count` True per row, chosen uniformly with `g`."""
    order = torch.rand(batch, total, generator=g).argsort(dim=1)
    return order < count


def block_mask(batch: int, size: tuple[int, int], block: int, ratio: float, g: torch.Generator) -> torch.Tensor:
    """B x 1 x H x W bool, True where a pixel is blanked: exactly round(ratio * blocks) whole blocks per image."""
    rows, cols = size[0] // block, size[1] // block
    chosen = _pick(batch, rows * cols, _count(ratio, rows * cols), g).view(batch, 1, rows, cols)
    return chosen.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)


def ring_index(size: tuple[int, int], rings: int, keep_radius: float, device=None) -> torch.Tensor:
    """H x W long in FFT layout: 0 inside the protected centre, else the ring 1..rings the frequency lies in.

    Radius = |frequency| / |corner frequency| in [0, 1]; rings split [keep_radius, 1] into equal widths.
    """
    fy = torch.fft.fftfreq(size[0], device=device).view(-1, 1)
    fx = torch.fft.fftfreq(size[1], device=device).view(1, -1)
    radius = (fy.pow(2) + fx.pow(2)).sqrt() / math.sqrt(0.5)
    ring = ((radius - keep_radius) / (1.0 - keep_radius) * rings).floor().long().clamp(max=rings - 1) + 1
    return torch.where(radius < keep_radius, torch.zeros_like(ring), ring)


def ring_drop(batch: int, rings: int, ratio: float, g: torch.Generator) -> torch.Tensor:
    """B x rings bool, True for the rings zeroed: exactly round(ratio * rings) per image."""
    return _pick(batch, rings, _count(ratio, rings), g)


def frequency_view(images: torch.Tensor, drop: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Images with their dropped rings' frequencies zeroed (the protected centre, DC included, always kept).

    The mask depends on |frequency| only, so it is conjugate-symmetric and the inverse FFT is real.
    """
    table = torch.cat([torch.zeros_like(drop[:, :1]), drop], dim=1)  # ring 0 = protected centre
    keep = (~table[:, index]).unsqueeze(1).to(images.dtype)  # B x 1 x H x W
    return torch.fft.ifft2(torch.fft.fft2(images) * keep).real


def consistency_weights(spatial_tokens: torch.Tensor, frequency_tokens: torch.Tensor,
                        power: float = 1.0) -> torch.Tensor:
    """B weights: ((1 + mean-over-tokens cosine) / 2) ** power, divided by their mean (so they average to 1)."""
    cosine = F.cosine_similarity(spatial_tokens.float(), frequency_tokens.float(), dim=-1, eps=1e-8).mean(dim=1)
    raw = ((1.0 + cosine) / 2.0).clamp_min(1e-6).pow(power)
    return raw / raw.mean()


def per_sample_token_mse(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """B values: each sample's eq. (6) token MSE (mean over its N tokens and D channels)."""
    if student_tokens.shape != teacher_tokens.shape:
        raise ValueError(f"token shapes differ: student {tuple(student_tokens.shape)} vs teacher "
                         f"{tuple(teacher_tokens.shape)}")
    return (student_tokens.float() - teacher_tokens.float()).pow(2).mean(dim=(1, 2))


class LossTerms(NamedTuple):
    total: torch.Tensor
    feature: torch.Tensor
    reconstruction: torch.Tensor


def masked_consistency_loss(view_tokens: torch.Tensor, reconstruction: torch.Tensor, teacher_clean: torch.Tensor,
                            clean: torch.Tensor, weights: torch.Tensor, feature_weight: float,
                            recon_weight: float) -> LossTerms:
    """The objective for V student views of B images (view-major: V*B rows): tokens and reconstructions.

    d_b = mean over views of the token MSE to the teacher's clean tokens; feature = mean_b(w_b * d_b);
    reconstruction = mean |reconstruction - clean| over every view, pixel and channel.
    """
    batch = teacher_clean.shape[0]
    views = view_tokens.shape[0] // batch
    d = per_sample_token_mse(view_tokens, teacher_clean.repeat(views, 1, 1)).view(views, batch).mean(dim=0)
    feature = (weights.float() * d).mean()
    recon = (reconstruction.float() - clean.float().repeat(views, 1, 1, 1)).abs().mean()
    return LossTerms(feature_weight * feature + recon_weight * recon, feature, recon)


class ReconstructionDecoder(nn.Module):
    """Light decoder: 1x1 conv C -> hidden, GELU, 1x1 conv -> stride² x 3, pixel shuffle to the input size."""

    def __init__(self, in_channels: int, stride: int, hidden: int = 256, out_channels: int = 3):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, out_channels * stride * stride, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.fc2(self.act(self.fc1(x))))


class MaskedStudent(DistillStudent):
    """DistillStudent plus the reconstruction decoder; `forward(x)` gives tokens as the plain student does."""

    def __init__(self, student: DistillStudent, decoder: ReconstructionDecoder):
        super().__init__(student.encoder, student.head, student.grid)
        self.decoder = decoder

    def forward(self, x: torch.Tensor, reconstruct: bool = False):
        features = self.encoder.forward_features(x)
        z = self.head(features)
        if tuple(z.shape[-2:]) != self.grid:
            z = F.interpolate(z, size=self.grid, mode="bilinear", align_corners=False)
        tokens = z.flatten(2).transpose(1, 2)
        return (tokens, self.decoder(features)) if reconstruct else tokens


@dataclass(frozen=True)
class MaskSettings:
    mask_ratio: float
    mask_block: int
    ring_mask_ratio: float
    mask_rings: int
    ring_keep_radius: float
    consistency_power: float
    feature_weight: float
    recon_weight: float
    recon_hidden: int

    @classmethod
    def of(cls, cfg: DistillConfig) -> MaskSettings:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def check_settings(cfg: DistillConfig) -> None:
    """Refuse mask settings without this objective (they would be ignored) and values out of range."""
    defaults = DistillConfig()
    if cfg.objective != NAME:
        given = [name for name in SETTINGS if getattr(cfg, name) != getattr(defaults, name)]
        if given:
            raise ConfigError(f"{', '.join('--' + n.replace('_', '-') for n in given)}: only used by --objective "
                              f"{NAME} (this run's objective is {cfg.objective}); drop the setting(s) or pass "
                              f"--objective {NAME}")
        return
    problems = []
    if not 0 <= cfg.mask_ratio < 1:
        problems.append(f"--mask-ratio {cfg.mask_ratio}: must lie in [0, 1)")
    if cfg.mask_block < 1 or cfg.image_size % cfg.mask_block:
        problems.append(f"--mask-block {cfg.mask_block}: must be a positive divisor of --image-size "
                        f"{cfg.image_size} (e.g. 16 or 32)")
    elif _count(cfg.mask_ratio, (cfg.image_size // cfg.mask_block) ** 2) == (cfg.image_size // cfg.mask_block) ** 2:
        problems.append(f"--mask-ratio {cfg.mask_ratio}: would blank every {cfg.mask_block}-px block; lower it")
    if not 0 <= cfg.ring_mask_ratio <= 1:
        problems.append(f"--ring-mask-ratio {cfg.ring_mask_ratio}: must lie in [0, 1]")
    if not 1 <= cfg.mask_rings <= 64:
        problems.append(f"--mask-rings {cfg.mask_rings}: must be 1..64")
    if not 0 < cfg.ring_keep_radius < 1:
        problems.append(f"--ring-keep-radius {cfg.ring_keep_radius}: must lie in (0, 1) (share of the corner "
                        "frequency; the centre keeps the image's mean)")
    if not (0 <= cfg.consistency_power <= 16 and math.isfinite(cfg.consistency_power)):
        problems.append(f"--consistency-power {cfg.consistency_power}: must be 0..16 (0 = equal weights)")
    weights = (cfg.feature_weight, cfg.recon_weight)
    if not all(w >= 0 and math.isfinite(w) for w in weights) or sum(weights) == 0:
        problems.append(f"--feature-weight {cfg.feature_weight} / --recon-weight {cfg.recon_weight}: both must be "
                        ">= 0 and finite, and not both 0")
    if not 1 <= cfg.recon_hidden <= 8192:
        problems.append(f"--recon-hidden {cfg.recon_hidden}: must be 1..8192")
    if problems:
        raise ConfigError("; ".join(problems))


def _mask_seed(batch_seed: int) -> int:
    """A seed for the masks apart from the mixup generator's (which the loop seeds with batch_seed itself)."""
    return (batch_seed * 6364136223846793005 + 1442695040888963407) % (2**63)


class MaskedConsistency(TokenDistillation):
    """The loop's method for `--objective masked-consistency`; card and fingerprint as for token-mse."""

    name = NAME
    resume_fields = RESUME_FIELDS + SETTINGS
    batch_seed = 0  # set by the loop before each micro-batch's loss (trainer.TrainStep.train_step)

    def build_models(self, cfg: DistillConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
        self.settings = MaskSettings.of(cfg)
        teacher, student = build_models(cfg, torch.device("cpu"))
        channels, (rows, _) = feature_channels(student.encoder, cfg.image_size)
        torch.manual_seed(cfg.seed + 1)
        decoder = ReconstructionDecoder(channels, cfg.image_size // rows, cfg.recon_hidden)
        return teacher.to(device), MaskedStudent(student, decoder).to(device)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The spatial and frequency views of a micro-batch, masks drawn from `batch_seed`."""
        s = self.settings
        g = torch.Generator().manual_seed(_mask_seed(self.batch_seed))
        batch, size = images.shape[0], (images.shape[-2], images.shape[-1])
        blanked = block_mask(batch, size, s.mask_block, s.mask_ratio, g).to(images.device)
        drop = ring_drop(batch, s.mask_rings, s.ring_mask_ratio, g).to(images.device)
        index = ring_index(size, s.mask_rings, s.ring_keep_radius, images.device)
        return images.masked_fill(blanked, 0.0), frequency_view(images, drop, index)

    def loss_terms(self, teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> LossTerms:
        s = self.settings
        clean = images.float()
        spatial, frequency = self.views(clean)
        with torch.no_grad():
            t_clean, t_spatial, t_frequency = teacher(torch.cat([clean, spatial, frequency])).chunk(3)
            weights = consistency_weights(t_spatial, t_frequency, s.consistency_power)
        tokens, reconstruction = student(torch.cat([spatial, frequency]), reconstruct=True)
        return masked_consistency_loss(tokens, reconstruction, t_clean, clean, weights, s.feature_weight,
                                       s.recon_weight)

    def loss(self, teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return self.loss_terms(teacher, student, images).total
