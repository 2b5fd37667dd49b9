"""Few labels and long tails: fewer training images per class, and a class-balanced sampler."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from project.data.sampling import TrainSampler
from project.data.splits import TrainSubset


class ClassLimits(TrainSubset):
    """Keeps up to a number of training images per class, drawn in a seeded order."""

    def limits(self, counts: Counter, num_classes: int) -> dict[int, int]:
        """Images to keep per class index, given the training split's ``counts``."""
        raise NotImplementedError

    def __call__(
        self, indices: list[int], targets: Sequence[int], num_classes: int, seed: int
    ) -> list[int]:
        limits = self.limits(Counter(targets[i] for i in indices), num_classes)
        generator = torch.Generator().manual_seed(seed)
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator)]
        kept, taken = [], Counter()
        for i in order:
            if taken[targets[i]] < limits[targets[i]]:
                kept.append(i)
                taken[targets[i]] += 1
        return sorted(kept)


class FewLabels(ClassLimits):
    """At most ``per_class`` training images of each class: few-label experiments.

    YAML (``configs/experiments/digits-5to9-*.yaml``)::

        data:
          init_args:
            train_subset:
              class_path: project.data.subsets.FewLabels
              init_args:
                per_class: 10
    """

    def __init__(self, per_class: int) -> None:
        if per_class < 1:
            raise ValueError(f"per_class must be at least 1, got {per_class}")
        self.per_class = per_class

    def limits(self, counts: Counter, num_classes: int) -> dict[int, int]:
        return {c: min(counts[c], self.per_class) for c in range(num_classes)}


class LongTail(ClassLimits):
    """Class counts falling geometrically, in class-index order, to ``1 / ratio`` of the largest.

    YAML (``configs/experiments/longtail-*.yaml``)::

        data:
          init_args:
            train_subset:
              class_path: project.data.subsets.LongTail
              init_args:
                ratio: 10
    """

    def __init__(self, ratio: float) -> None:
        if ratio < 1:
            raise ValueError(f"ratio must be at least 1, got {ratio}")
        self.ratio = ratio

    def limits(self, counts: Counter, num_classes: int) -> dict[int, int]:
        largest = max(counts.values())
        limits = {}
        for c in range(num_classes):
            share = self.ratio ** (-c / (num_classes - 1)) if num_classes > 1 else 1.0
            limits[c] = min(counts[c], max(1, round(largest * share)))
        return limits


class Balanced(TrainSampler):
    """Draws training images with probability inversely proportional to their class's size.

    With replacement, as many draws per epoch as there are images, so every class
    is seen about equally often: the data side of what class weights do in the loss.
    """

    def __call__(self, targets: list[int]) -> WeightedRandomSampler:
        counts = Counter(targets)
        weights = torch.tensor([1.0 / counts[t] for t in targets], dtype=torch.float64)
        return WeightedRandomSampler(weights, num_samples=len(targets), replacement=True)
