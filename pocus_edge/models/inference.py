"""Run a PyTorch model on frames the way the runtime feeds a bundle: the one helper behind every PyTorch reference.

Export parity, `pocus eval` / `pocus bench parity` of a checkpoint, validation during fine-tuning, the t-SNE plot
and the self-test's PyTorch fallback all call these, so "what PyTorch says about these frames" means one thing:
the runtime's own numpy pre-processing (runtime/preprocess.py) of each gray frame into the normalised 3-channel
input the torch model takes (never raw pixels: a raw-input fold happens only in the exported file), the model in
eval mode (restored afterwards), no autograd, float32 numpy out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..runtime.preprocess import normalized_chw


def torch_outputs(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    """`model` on an already prepared input batch (eval mode, no grad) -> float32 numpy outputs."""
    was_training = model.training
    if was_training:  # only then: some wrapped/exported graphs refuse .eval() and are in eval mode already
        model.eval()
    try:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()
    finally:
        if was_training:
            model.train()


def frame_outputs(model: nn.Module, grays: list[np.ndarray], preprocessing: dict[str, Any],
                  batch_size: int = 16) -> np.ndarray:
    """Gray frames (H x W in [0, 1]) -> the model's outputs (N x ...), `batch_size` frames at a time; the input is
    normalised with `preprocessing`'s size, mean and std whatever its raw_input says (the torch model normalises
    nothing itself)."""
    pre = dict(preprocessing, raw_input=False)
    outs = [torch_outputs(model, np.stack([normalized_chw(g, pre) for g in grays[i:i + batch_size]]))
            for i in range(0, len(grays), batch_size)]
    return np.concatenate(outs)
