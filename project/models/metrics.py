"""The metrics every split logs: accuracy, top-5 accuracy, macro precision, recall and F1."""

from __future__ import annotations

from typing import Any

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
