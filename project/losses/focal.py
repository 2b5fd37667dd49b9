"""Focal loss (Lin et al., 2017): a softmax form for single-label classes, a sigmoid form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from project.losses.base import (
    ClassificationLoss,
    ClassWeights,
    Reduction,
    check_logits_and_targets,
    compute_dtype,
)


def modulating_factor(one_minus_p: Tensor, gamma: float) -> Tensor:
    """``(1 - p) ** gamma`` with finite gradients where ``p`` is exactly 1.

    For ``gamma < 1`` the power's derivative at 0 is infinite; clamping to the
    smallest normal number keeps it finite without changing any value that matters.
    """
    return one_minus_p.clamp_min(torch.finfo(one_minus_p.dtype).tiny).pow(gamma)


class FocalLoss(ClassificationLoss):
    """Multi-class focal loss: ``-alpha_t * (1 - p_t) ** gamma * log(p_t)`` over a softmax.

    Down-weights examples the model already gets right, so training spends its
    effort on hard and rare ones. ``alpha_t`` is the weight of each sample's own
    class (not one number for all classes, which would only rescale the loss).
    With ``gamma: 0`` it is ``F.cross_entropy(weight=alpha)``; ``mean`` divides by
    the summed ``alpha_t`` of the counted targets, as that does.

    Soft targets ``(N, C)`` (MixUp, CutMix) give
    ``-sum_c alpha_c * y_c * (1 - p_c) ** gamma * log(p_c)``, averaged over the batch.

    Args:
        gamma: Focusing strength; 0 is cross-entropy, 2 is the paper's choice.
        alpha: Per-class weights: a list, ``"inverse_frequency"``, ``"effective_number"``
            (computed from the training split, see :class:`WeightedCrossEntropy`),
            or ``None`` for none.
        beta: Of ``alpha: effective_number``.
        ignore_index: Class-index target that adds nothing and is not counted.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in ``F.cross_entropy``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: ClassWeights = None,
        beta: float = 0.999,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(alpha, beta, ignore_index, reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_logits_and_targets(logits, targets)
        log_probs = F.log_softmax(logits.to(compute_dtype(logits)), dim=1)
        alpha = self.weight_for(logits)
        if targets.is_floating_point():
            self.check_soft_targets_allowed()
            focal = -modulating_factor(-torch.expm1(log_probs), self.gamma) * log_probs
            if alpha is not None:
                focal = focal * alpha
            per_sample = (targets.to(focal.dtype) * focal).sum(dim=1)
            return self.reduce(per_sample, logits.shape[0])
        index, keep = self.hard_targets(targets)
        log_p_target = log_probs.gather(1, index[:, None]).squeeze(1)
        # 1 - p_t as -expm1(log p_t): exact when p_t is close to 1.
        per_sample = -modulating_factor(-torch.expm1(log_p_target), self.gamma) * log_p_target
        alpha_target = torch.ones_like(per_sample) if alpha is None else alpha[index]
        per_sample = torch.where(keep, alpha_target * per_sample, torch.zeros_like(per_sample))
        return self.reduce(per_sample, (alpha_target * keep).sum())

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, {super().extra_repr()}"


class SigmoidFocalLoss(ClassificationLoss):
    """Binary / multi-label focal loss on sigmoids, equal to ``torchvision.ops.sigmoid_focal_loss``.

    Not a call to it: torchvision computes ``(1 - p_t) ** gamma``, whose
    derivative is infinite where ``p_t`` is 1, so for ``gamma < 1`` a saturated
    logit gives NaN gradients (``tests/test_losses.py`` checks both). This adds
    class-index targets and ``ignore_index`` too.

    Each of the C outputs is its own yes/no question. Targets are ``(N, C)``
    floats in [0, 1] (multi-label or soft), or class indices ``(N,)`` turned into
    one-hot rows (one-vs-rest training of a single-label classifier). ``mean``
    averages over every counted element, as torchvision does; for class
    indices, rows whose target is ``ignore_index`` are left out.

    Args:
        alpha: Weight of positives (``1 - alpha`` for negatives); ``None`` weighs
            both equally (torchvision's ``alpha=-1``).
        gamma: Focusing strength; 0 is binary cross-entropy.
        ignore_index: Class-index target whose row adds nothing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape ``(N, C)``).
    """

    def __init__(
        self,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(None, ignore_index=ignore_index, reduction=reduction)
        if alpha is not None and not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] (or None for no weighting), got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_logits_and_targets(logits, targets)
        logits = logits.to(compute_dtype(logits))
        if targets.is_floating_point():
            self.check_soft_targets_allowed()
            labels = targets.to(logits.dtype)
            keep = torch.ones_like(labels, dtype=torch.bool)
        else:
            index, kept_rows = self.hard_targets(targets)
            labels = F.one_hot(index, logits.shape[1]).to(logits.dtype)
            keep = kept_rows[:, None].expand_as(labels)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        # 1 - p_t from both sigmoids rather than 1 - sigmoid: exact in the tails.
        one_minus_p = labels * torch.sigmoid(-logits) + (1 - labels) * torch.sigmoid(logits)
        per_element = modulating_factor(one_minus_p, self.gamma) * bce
        if self.alpha is not None:
            per_element = (self.alpha * labels + (1 - self.alpha) * (1 - labels)) * per_element
        per_element = torch.where(keep, per_element, torch.zeros_like(per_element))
        return self.reduce(per_element, keep.sum().to(per_element.dtype))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"
