"""Knowledge distillation (Hinton et al., 2015): match a teacher's softened predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DistillationLoss(nn.Module):
    """``alpha * T**2 * KL(teacher_T || student_T) + (1 - alpha) * hard_loss(student, targets)``.

    ``teacher_T`` and ``student_T`` are the softmaxes of the logits divided by
    the temperature ``T``. The ``T**2`` factor keeps the soft term's gradients
    at the same scale whatever ``T`` is, so ``alpha`` means the same at every
    temperature. The KL is summed over classes and averaged over the batch
    (``F.kl_div(reduction="batchmean")``); the teacher gets no gradient.

    Called as ``loss(student_logits, targets, teacher_logits)`` by a
    distillation LightningModule. After each call ``last_terms`` holds the
    detached, unweighted ``soft`` and ``hard`` values for logging.

    Args:
        temperature: Softens both distributions; 1 compares the plain softmaxes,
            2 to 5 is usual (higher shows more of the teacher's "dark knowledge").
        alpha: Weight of the soft (teacher) term; 1 ignores the labels.
        hard_loss: Loss on the labels, called as ``hard_loss(student_logits, targets)``;
            cross-entropy by default (it accepts MixUp/CutMix soft targets).
    """

    def __init__(
        self, temperature: float = 4.0, alpha: float = 0.9, hard_loss: nn.Module | None = None
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.hard_loss = hard_loss if hard_loss is not None else nn.CrossEntropyLoss()
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, student_logits: Tensor, targets: Tensor, teacher_logits: Tensor) -> Tensor:
        if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
            raise ValueError(
                f"student and teacher logits must both be (N, C) with the same classes; got "
                f"student {tuple(student_logits.shape)}, teacher {tuple(teacher_logits.shape)}"
            )
        # float32 at least: log-probabilities of extreme half-precision logits need its range.
        dtype = torch.promote_types(student_logits.dtype, torch.float32)
        student = F.log_softmax(student_logits.to(dtype) / self.temperature, dim=1)
        teacher = F.log_softmax(teacher_logits.detach().to(dtype) / self.temperature, dim=1)
        soft = F.kl_div(student, teacher, log_target=True, reduction="batchmean")
        soft = soft * self.temperature**2
        self.last_terms = {"soft": soft.detach()}
        if self.alpha == 1:
            return soft
        hard = self.hard_loss(student_logits, targets)
        self.last_terms["hard"] = hard.detach()
        return self.alpha * soft + (1 - self.alpha) * hard

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
