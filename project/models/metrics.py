"""The metrics every split logs (accuracy, top-5 accuracy, macro precision, recall, F1) and the
epoch means of the training loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def classification_metrics(
    num_classes: int, prefix: str | None = None, validate_args: bool = True
) -> MetricCollection:
    """Accuracy, top-5 accuracy (from 5 classes on), macro precision, recall and F1.

    ``validate_args=False`` skips torchmetrics' input checks, among them a
    ``torch.unique`` of the targets that waits for the GPU on every update.
    """
    options = {"num_classes": num_classes, "validate_args": validate_args}
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(average="micro", **options),
        "precision": MulticlassPrecision(average="macro", **options),
        "recall": MulticlassRecall(average="macro", **options),
        "f1": MulticlassF1Score(average="macro", **options),
    }
    if num_classes >= 5:
        metrics["acc_top5"] = MulticlassAccuracy(top_k=5, average="micro", **options)
    # Only metrics that truly share their state may share an update: torchmetrics'
    # automatic grouping merges metrics whose states merely happen to be equal on
    # the first batch (top-5 with the macro scores when that batch is all right),
    # and then reports the top-5 statistics as precision, recall and F1.
    return MetricCollection(metrics, prefix=prefix, compute_groups=[["precision", "recall", "f1"]])


class EpochMeans:
    """Means over an epoch of values computed per training batch (the loss and its terms).

    Each process sums ``value x batch size``; :meth:`compute` reduces the sums over
    every process, so in a distributed run the epoch's loss is all processes', not
    rank 0's. It must run where every process runs (``on_train_epoch_end`` of the
    model): ``self.log(..., sync_dist=True)`` would reduce a value where a progress
    bar first reads it, on rank 0 alone, and the other processes would never join.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def add(self, values: dict[str, Tensor], count: int) -> None:
        """Adds one batch's ``values`` (scalars) for ``count`` samples."""
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach() * count
        self.count += count

    def compute(self, reduce: Callable[..., Tensor], device: torch.device) -> dict[str, Tensor]:
        """Each value's mean over every sample of every process (``reduce``: the strategy's)."""
        if not self.sums:
            return {}
        count = reduce(torch.tensor(float(self.count), device=device), reduce_op="sum")
        means = {name: reduce(t.float(), reduce_op="sum") / count for name, t in self.sums.items()}
        self.reset()
        return means
