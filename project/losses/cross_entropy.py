"""Cross-entropy variants: class-weighted (with label smoothing), and Poly-1.

Plain label smoothing is ``torch.nn.CrossEntropyLoss(label_smoothing=...)``;
:class:`WeightedCrossEntropy` adds what PyTorch's lacks: weights computed from
the training split's class counts.
"""

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


class WeightedCrossEntropy(ClassificationLoss):
    """Cross-entropy with per-class weights, given or computed from the training split.

    Equal to ``F.cross_entropy(logits, targets, weight=w, label_smoothing=s)``,
    normalisation included: ``mean`` divides by the summed weight of the
    counted targets, so the weights shift attention between classes without
    changing the loss's scale. Accepts class indices ``(N,)`` or class
    probabilities ``(N, C)`` (MixUp, CutMix), weighted per class inside the sum.

    YAML::

        loss:
          class_path: project.losses.cross_entropy.WeightedCrossEntropy
          init_args:
            weight: effective_number   # or inverse_frequency, or [0.1, 0.5, 0.4]
            beta: 0.99

    Args:
        weight: One weight per class; ``"inverse_frequency"`` (``n / (C * n_c)``);
            ``"effective_number"`` of Cui et al. (2019), ``(1 - beta) / (1 - beta**n_c)``
            scaled to sum to C. The last two are computed from the training
            split's class counts when training starts.
        beta: Of ``"effective_number"``: 0 weighs classes equally, 0.999 and above is
            close to inverse frequency for small classes.
        label_smoothing: Share of the target mass spread evenly over all classes.
        ignore_index: Class-index target that adds nothing and is not counted.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in ``F.cross_entropy``.
    """

    def __init__(
        self,
        weight: ClassWeights = "inverse_frequency",
        beta: float = 0.999,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(weight, beta, ignore_index, reduction)
        if not 0 <= label_smoothing <= 1:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_logits_and_targets(logits, targets)
        log_probs = F.log_softmax(logits.to(compute_dtype(logits)), dim=1)
        weight = self.weight_for(logits)
        num_classes = logits.shape[1]
        smoothing = self.label_smoothing
        if targets.is_floating_point():
            self.check_soft_targets_allowed()
            probs = targets.to(log_probs.dtype)
            if smoothing:
                probs = probs * (1 - smoothing) + smoothing / num_classes
            weighted = log_probs if weight is None else log_probs * weight
            per_sample = -(probs * weighted).sum(dim=1)
            return self.reduce(per_sample, logits.shape[0])
        index, keep = self.hard_targets(targets)
        target_weight = torch.ones_like(log_probs[:, 0]) if weight is None else weight[index]
        per_sample = -target_weight * log_probs.gather(1, index[:, None]).squeeze(1)
        if smoothing:
            weighted = log_probs if weight is None else log_probs * weight
            uniform = -weighted.sum(dim=1) / num_classes
            per_sample = (1 - smoothing) * per_sample + smoothing * uniform
        per_sample = torch.where(keep, per_sample, torch.zeros_like(per_sample))
        return self.reduce(per_sample, (target_weight * keep).sum())

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, {super().extra_repr()}"


class PolyLoss(ClassificationLoss):
    """Poly-1 loss (Leng et al., 2022): cross-entropy plus ``epsilon * (1 - p_t)``.

    ``p_t`` is the predicted probability of the target class (for soft targets,
    ``sum_c y_c p_c``, as in the paper's code). ``epsilon`` 0 is cross-entropy;
    positive values push confident-but-not-certain predictions harder (the
    paper uses 1 for ImageNet), negative values relax them.

    Args:
        epsilon: Weight of the first polynomial term.
        ignore_index: Class-index target that adds nothing and is not counted.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in ``F.cross_entropy``.
    """

    def __init__(
        self, epsilon: float = 1.0, ignore_index: int = -100, reduction: Reduction = "mean"
    ) -> None:
        super().__init__(None, ignore_index=ignore_index, reduction=reduction)
        self.epsilon = epsilon

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        check_logits_and_targets(logits, targets)
        log_probs = F.log_softmax(logits.to(compute_dtype(logits)), dim=1)
        if targets.is_floating_point():
            self.check_soft_targets_allowed()
            probs = targets.to(log_probs.dtype)
            cross_entropy = -(probs * log_probs).sum(dim=1)
            p_target = (probs * log_probs.exp()).sum(dim=1)
            return self.reduce(cross_entropy + self.epsilon * (1 - p_target), logits.shape[0])
        index, keep = self.hard_targets(targets)
        log_p_target = log_probs.gather(1, index[:, None]).squeeze(1)
        # 1 - exp(x) via expm1 keeps its precision when p_t is close to 1.
        per_sample = -log_p_target - self.epsilon * torch.expm1(log_p_target)
        per_sample = torch.where(keep, per_sample, torch.zeros_like(per_sample))
        return self.reduce(per_sample, keep.sum().to(per_sample.dtype))

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, {super().extra_repr()}"
