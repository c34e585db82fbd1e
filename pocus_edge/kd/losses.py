"""TS-KD's two distillation terms (paper 003, eq. 1-3), as pure functions tested against hand computations.

hidden: MSE between the teacher's last encoder feature map and the student's deepest stage after a 1x1 projector,
        resized (bilinear) to the teacher's grid; averaged over channels, positions and batch.
output: MSE between teacher and student logits at the student's output size (segmentation: mask logits resized
        bilinearly when the sizes differ; classification: class logits), or, for classification with a temperature,
        Hinton's KL(softmax(t/T) || softmax(s/T)) x T².
total = output_weight x output + hidden_weight x hidden (TS-KD's best setting: 0.2 and 0.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hidden_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """MSE of the projected student map (B x C x h x w, resized to the teacher's H x W) against the teacher's."""
    if student_features.shape[:2] != teacher_features.shape[:2]:
        raise ValueError(f"projected student features {tuple(student_features.shape)} and teacher features "
                         f"{tuple(teacher_features.shape)} differ in batch or channels")
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        student_features = F.interpolate(student_features, size=teacher_features.shape[-2:], mode="bilinear",
                                         align_corners=False)
    return F.mse_loss(student_features.float(), teacher_features.float())


def output_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 0.0) -> torch.Tensor:
    """MSE of logits at the student's output size; temperature > 0 (classification) gives the KL form instead."""
    if student_logits.ndim == 4 and teacher_logits.shape[-2:] != student_logits.shape[-2:]:
        teacher_logits = F.interpolate(teacher_logits, size=student_logits.shape[-2:], mode="bilinear",
                                       align_corners=False)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ")
    if temperature > 0:
        if student_logits.ndim != 2:
            raise ValueError("the temperature (KL) form is for classification logits (B x K)")
        t = temperature
        return F.kl_div(F.log_softmax(student_logits.float() / t, dim=1), F.softmax(teacher_logits.float() / t, dim=1),
                        reduction="batchmean") * t * t
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def kd_loss(student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor],
            output_weight: float, hidden_weight: float, temperature: float = 0.0) -> torch.Tensor:
    """output_weight x output + hidden_weight x hidden loss of (logits, features) pairs; a 0 weight skips a term."""
    total = student[0].new_zeros((), dtype=torch.float32)
    if output_weight:
        total = total + output_weight * output_loss(student[0], teacher[0], temperature)
    if hidden_weight:
        total = total + hidden_weight * hidden_loss(student[1], teacher[1])
    return total
