"""Built-in smoke-test models (`unet-ARCH`, `classifier-ARCH`, `encoder-ARCH`): random weights, built the same way
every time, whose int8 parity does not hinge on which phantoms are held out.

A random CNN with BatchNorm statistics re-estimated on data has well-scaled activations (std 0.2-3 at every layer)
but is chaotic: the rounding of one early int8 tensor (the stem) grows ~25x relative to the output's spread by the
time it reaches the logits, so full int8 agreed with fp32 at Dice ~0.85 (torch fake-quant, 48 phantoms) and the
slow export matrix failed for 10 of 24 cases. Two choices make these models behave more like trained ones:
- BatchNorm gammas are scaled by GAMMA_SCALE (0.1) before the statistics are re-estimated: each layer's output
  stays in the near-linear range of its activation (ReLU offset, hardswish, SiLU), and near-linear nets do not
  amplify rounding noise the way random nonlinear ones do;
- the last layer projects onto the principal directions of its input features on the phantom batch (not random
  directions), so the output varies with the largest feature differences rather than with the noise-like ones.
Then the head is scaled and shifted so outputs spread around the decision point (else a random U-Net's mask is
all empty and agreement is trivially perfect). Bundles of these models stay `smoke_test_only` (export/record.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import create_model
from .tasks import randomize_batchnorm

SMOKE_SEED = 0
GAMMA_SCALE = 0.1
PHANTOM_COUNT, PHANTOM_SEED = 16, 500  # the frames BatchNorm and head are fitted to (not the parity frames)


def phantom_batch(image_size: int) -> torch.Tensor:
    """16 normalised phantom frames (N x 3 x S x S), the data the smoke models are fitted to."""
    from ..export.data import phantom_set
    from ..runtime.preprocess import normalization, normalized_chw

    pre = normalization(image_size)
    images = phantom_set(PHANTOM_COUNT, seed=PHANTOM_SEED).images
    return torch.from_numpy(np.stack([normalized_chw(im, pre) for im in images]))


@torch.no_grad()
def build_smoke_model(task: str, arch: str, num_classes: int, image_size: int) -> nn.Module:
    """The deterministic smoke model of `task` on `arch`, in eval mode (same weights on every call)."""
    torch.manual_seed(SMOKE_SEED)
    model = randomize_batchnorm(create_model(task, arch, num_classes), seed=SMOKE_SEED)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.mul_(GAMMA_SCALE)
    images = phantom_batch(image_size)
    _reestimate_batchnorm(model, images)
    if task == "segmentation":
        _principal_segmentation_head(model, images)
    elif task == "classification":
        _principal_classifier_head(model, images)
    return model.eval()


def _reestimate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Running statistics = the cumulative average over one train-mode pass on `images`."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    model(images)
    model.eval()


def _principal_directions(features: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` leading principal directions (rows) of centred features, signs fixed for determinism."""
    _, _, vh = torch.linalg.svd(features - features.mean(dim=0), full_matrices=False)
    directions = vh[:count]
    signs = torch.sign(directions.gather(1, directions.abs().argmax(dim=1, keepdim=True)))
    return directions * signs


def _principal_segmentation_head(model: nn.Module, images: torch.Tensor) -> None:
    """Head = the first principal direction of its input patches; logits spread (std 2) around 0 at the median."""
    head = model.segmentation_head[0]
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    model(images)
    hook.remove()
    patches = F.unfold(seen[0], head.kernel_size, padding=head.padding).transpose(1, 2)
    patches = patches.reshape(-1, patches.shape[-1])[::7]  # a fixed subsample keeps the SVD well under a second
    head.weight.copy_(_principal_directions(patches, 1).reshape(head.weight.shape))
    head.bias.zero_()
    head.weight.mul_(2.0 / model(images).std().clamp_min(1e-6))
    head.bias.sub_(model(images).median())


def _principal_classifier_head(model: nn.Module, images: torch.Tensor) -> None:
    """Class k's weights = the k-th principal direction of the pooled features; logits centred, spread std 2."""
    features = model.features(images)
    model.head.weight.copy_(_principal_directions(features, model.head.out_features))
    model.head.bias.zero_()
    logits = model(images)
    gain = 2.0 / (logits - logits.mean(dim=0)).std().clamp_min(1e-6)  # spread images apart, not classes
    model.head.weight.mul_(gain)
    model.head.bias.sub_(model(images).mean(dim=0))
