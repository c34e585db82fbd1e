"""The distillation objective: in-batch mixup, token-wise MSE (eq. 6), warm-up + cosine LR, held-out R²."""

from __future__ import annotations

import math

import torch


def token_mse(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """Eq. (6): L = 1/(B·N) Σ_b Σ_n MSE(s_bn, t_bn), each token's MSE averaged over its D channels.

    Shapes are B x N x D; the loss is 0 exactly when the two token sets are identical.
    """
    if student_tokens.shape != teacher_tokens.shape:
        raise ValueError(
            f"token shapes differ: student {tuple(student_tokens.shape)} vs teacher {tuple(teacher_tokens.shape)}"
        )
    per_token = (student_tokens.float() - teacher_tokens.float()).pow(2).mean(dim=-1)  # B x N
    return per_token.mean()


def mixup(images: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Mix each image with another of the same batch: x' = λx + (1-λ)x[perm], λ ~ U(0, 1).

    The same mixed batch goes to teacher and student, so the target is the teacher's view of x'.
    """
    lam = float(torch.rand((), generator=g))
    perm = torch.randperm(images.shape[0], generator=g)
    return lam * images + (1.0 - lam) * images[perm], lam, perm


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to min_ratio at total_steps (a pure function of step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class R2Accumulator:
    """Held-out R² = 1 - SSE/SST over all tokens and channels; SST around the teacher's per-channel mean."""

    def __init__(self) -> None:
        self.sse = 0.0
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None

    def update(self, student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> None:
        s = student_tokens.double().reshape(-1, student_tokens.shape[-1])
        t = teacher_tokens.double().reshape(-1, teacher_tokens.shape[-1])
        self.sse += float((s - t).pow(2).sum())
        self.count += t.shape[0]
        self.sum = t.sum(0) if self.sum is None else self.sum + t.sum(0)
        self.sumsq = t.pow(2).sum(0) if self.sumsq is None else self.sumsq + t.pow(2).sum(0)

    def compute(self) -> float:
        if self.count == 0 or self.sum is None or self.sumsq is None:
            return float("nan")
        sst = float((self.sumsq - self.sum.pow(2) / self.count).sum())
        return 1.0 - self.sse / sst if sst > 0 else float("nan")
