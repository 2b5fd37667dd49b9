"""Several named loss terms added with weights that may change over the epochs."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from torch import Tensor, nn

Weight = float | dict[int, float]


def weight_at(weight: Weight, epoch: int) -> float:
    """A constant, or ``{epoch: weight}`` points joined linearly and held beyond both ends."""
    if not isinstance(weight, dict):
        return float(weight)
    epochs = sorted(weight)
    if epoch <= epochs[0]:
        return float(weight[epochs[0]])
    if epoch >= epochs[-1]:
        return float(weight[epochs[-1]])
    right = bisect_right(epochs, epoch)
    start, end = epochs[right - 1], epochs[right]
    share = (epoch - start) / (end - start)
    return float(weight[start] + share * (weight[end] - weight[start]))


class WeightedSum(nn.Module):
    """``sum_k w_k(epoch) * term_k(logits, targets)`` over named loss terms.

    Each term is any loss module called as ``term(logits, targets)``. After each
    call ``last_terms`` holds every term's detached, unweighted value;
    ``ImageClassifier`` logs them as ``train/loss/<name>`` beside the total
    ``train/loss``. A weight may follow a schedule over epochs: changing the
    balance between terms is what a schedule is for (scaling a lone loss by the
    epoch is only a learning-rate change). Terms that learn from class counts
    (``weight: inverse_frequency``) get them through :meth:`set_class_counts`.

    YAML::

        loss:
          class_path: project.losses.weighted_sum.WeightedSum
          init_args:
            terms:
              ce: {class_path: torch.nn.CrossEntropyLoss}
              focal: {class_path: project.losses.focal.FocalLoss, init_args: {gamma: 2.0}}
            weights:
              ce: {0: 1.0, 10: 0.0}     # epoch: weight, linear in between, held after
              focal: {0: 0.0, 10: 1.0}

    Args:
        terms: Name to loss module; names become log keys, so no dots or slashes.
        weights: Name to a constant weight or an ``{epoch: weight}`` schedule;
            terms not named here weigh 1.
    """

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, Weight] | None = None):
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        bad = [name for name in terms if not name or "." in name or "/" in name]
        if bad:
            raise ValueError(f"term names {bad} cannot be empty or contain '.' or '/'")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(f"weights for {unknown}, which are not terms; terms: {list(terms)}")
        for name, weight in weights.items():
            if isinstance(weight, dict) and not weight:
                raise ValueError(f"the schedule of term {name!r} is empty: give {{epoch: weight}}")
        self.terms = nn.ModuleDict(terms)
        self.weights: dict[str, Weight] = {name: weights.get(name, 1.0) for name in terms}
        self.epoch = 0
        self.last_terms: dict[str, Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        """Moves every scheduled weight to ``epoch`` (ImageClassifier calls it each epoch)."""
        self.epoch = epoch

    def set_class_counts(self, counts: Sequence[int]) -> None:
        """Passes training-split class counts to the terms that use them."""
        for term in self.terms.values():
            if hasattr(term, "set_class_counts"):
                term.set_class_counts(counts)

    def current_weights(self) -> dict[str, float]:
        """Each term's weight at the current epoch."""
        return {name: weight_at(weight, self.epoch) for name, weight in self.weights.items()}

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        values = {name: term(logits, targets) for name, term in self.terms.items()}
        self.last_terms = {name: value.detach() for name, value in values.items()}
        weights = self.current_weights()
        return sum(weights[name] * value for name, value in values.items())

    def extra_repr(self) -> str:
        return f"weights={self.weights}"
