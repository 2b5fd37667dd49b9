"""What every classification loss here shares: input checks, class weights, PyTorch's reductions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

Reduction = Literal["mean", "sum", "none"]
WeightStrategy = Literal["inverse_frequency", "effective_number"]
ClassWeights = list[float] | WeightStrategy | None


def check_logits_and_targets(logits: Tensor, targets: Tensor) -> None:
    """Raises if ``targets`` cannot be scored against ``(N, C)`` ``logits``.

    Targets are either integer class indices of shape ``(N,)`` or float class
    probabilities of the logits' shape ``(N, C)`` (MixUp, CutMix, soft labels).
    Nothing is reshaped to fit: a mismatch is a bug upstream.
    """
    shapes = f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
    if not logits.is_floating_point() or logits.ndim != 2:
        raise ValueError(
            f"logits must be a float (N, C) tensor of raw class scores; got {logits.dtype} "
            f"({shapes})"
        )
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(
                f"float targets are class probabilities and need the logits' shape (N, C); "
                f"got {shapes}. Class indices must be an integer tensor of shape (N,)"
            )
        return
    if targets.dtype == torch.bool or targets.is_complex():
        raise TypeError(
            f"targets must be integer class indices (N,) or float probabilities (N, C); "
            f"got {targets.dtype} ({shapes})"
        )
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"integer targets are class indices and need shape (N,) = ({logits.shape[0]},); "
            f"got {shapes}"
        )


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float32 for half-precision logits: log-probabilities of extreme logits need its range."""
    return torch.promote_types(logits.dtype, torch.float32)


def class_weights_from_counts(
    counts: Sequence[int], strategy: WeightStrategy, beta: float = 0.999
) -> Tensor:
    """Per-class loss weights from training-split class counts.

    Args:
        counts: Training images per class, in class-index order.
        strategy: ``"inverse_frequency"``: ``n / (C * n_c)`` (the average weight
            over the training images is 1). ``"effective_number"`` (Cui et al.,
            2019): ``(1 - beta) / (1 - beta ** n_c)``, scaled to sum to ``C``.
        beta: Of the effective number; 0 gives equal weights, towards 1 it
            approaches inverse frequency.
    """
    counts_tensor = torch.as_tensor(list(counts), dtype=torch.float64)
    empty = [index for index, count in enumerate(counts) if count <= 0]
    if empty:
        raise ValueError(
            f"classes {empty} have no training images (counts {list(counts)}), so "
            f"'{strategy}' weights are undefined; give the weights as a list instead"
        )
    if strategy == "inverse_frequency":
        weights = counts_tensor.sum() / (len(counts) * counts_tensor)
    elif strategy == "effective_number":
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1) for effective-number weights, got {beta}")
        weights = (1 - beta) / (1 - beta**counts_tensor)
        weights = weights * len(counts) / weights.sum()
    else:
        raise ValueError(
            f"unknown class-weight strategy {strategy!r}: use 'inverse_frequency' or "
            "'effective_number', or give one weight per class"
        )
    return weights.to(torch.float32)


class ClassificationLoss(nn.Module):
    """Base of the losses here: per-class weights in a buffer, PyTorch's reductions.

    The per-class weights live in the ``class_weight`` buffer, so they move with
    the module to the device and are saved in checkpoints. Weights computed from
    the data (``"inverse_frequency"``, ``"effective_number"``) are filled in by
    :meth:`set_class_counts`, which ``ImageClassifier.set_class_counts`` calls
    with the training split's class counts before training
    (:class:`project.callbacks.LinkDataToModel` passes them from the data).

    Args:
        class_weight: One weight per class, a strategy name, or ``None`` for none.
        beta: Of the ``"effective_number"`` strategy.
        ignore_index: Class-index targets with this value add nothing to the
            loss and do not count in the mean (as in ``F.cross_entropy``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per sample), as in
            ``F.cross_entropy``.
    """

    def __init__(
        self,
        class_weight: ClassWeights = None,
        beta: float = 0.999,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.ignore_index = ignore_index
        self.beta = beta
        self.strategy: str | None = class_weight if isinstance(class_weight, str) else None
        if self.strategy is not None:
            # Checks the name and beta now rather than at the first batch.
            class_weights_from_counts([1, 2], self.strategy, beta)
            weight = torch.empty(0)
        elif class_weight is None:
            weight = torch.empty(0)
        else:
            weight = torch.as_tensor(class_weight, dtype=torch.float32)
            if weight.ndim != 1 or not torch.all(weight >= 0):
                raise ValueError(
                    f"class weights must be a flat list of non-negative numbers, got {class_weight}"
                )
        self.register_buffer("class_weight", weight)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        """Computes the class weights from training counts when a strategy was chosen."""
        if self.strategy is None:
            return
        weight = class_weights_from_counts(counts, self.strategy, self.beta)
        self.class_weight = weight.to(self.class_weight.device)

    def weight_for(self, logits: Tensor) -> Tensor | None:
        """The class weights in the logits' compute dtype, or ``None`` when unweighted."""
        if self.class_weight.numel() == 0:
            if self.strategy is not None:
                raise RuntimeError(
                    f"{type(self).__name__} uses '{self.strategy}' class weights but has no "
                    "class counts yet: project.callbacks.LinkDataToModel sets them from the "
                    "datamodule's class_counts; elsewhere call set_class_counts(counts) first"
                )
            return None
        if self.class_weight.shape[0] != logits.shape[1]:
            raise ValueError(
                f"{self.class_weight.shape[0]} class weights for logits of shape "
                f"{tuple(logits.shape)}: give one weight per class ({logits.shape[1]})"
            )
        return self.class_weight.to(compute_dtype(logits))

    def reduce(self, per_sample: Tensor, denominator: Tensor | float) -> Tensor:
        """Applies the reduction; ``mean`` divides the sum by ``denominator``.

        ``denominator`` is what ``F.cross_entropy`` divides by: the summed weight
        of the counted targets for class indices, the batch size for
        probabilities. When every target is ignored, ``mean`` is NaN, as there.
        """
        if self.reduction == "none":
            return per_sample
        total = per_sample.sum()
        return total if self.reduction == "sum" else total / denominator

    def hard_targets(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Class indices safe to gather with (ignored ones set to 0), and the kept mask."""
        keep = targets != self.ignore_index
        return torch.where(keep, targets, torch.zeros_like(targets)).long(), keep

    def check_soft_targets_allowed(self) -> None:
        if self.ignore_index != -100:
            raise ValueError(
                f"ignore_index ({self.ignore_index}) applies to class-index targets only; "
                "float (N, C) probability targets cannot be ignored (as in F.cross_entropy)"
            )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Weights computed from the data exist only after set_class_counts; a
        # checkpoint brings them, so take its shape rather than failing on it.
        saved = state_dict.get(prefix + "class_weight")
        if saved is not None and saved.shape != self.class_weight.shape:
            self.class_weight = torch.empty(
                saved.shape, dtype=self.class_weight.dtype, device=self.class_weight.device
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        given = self.class_weight.tolist() if self.class_weight.numel() else None
        weight = self.strategy or given
        return (
            f"class_weight={weight}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
