"""Evaluation reports of the test split: the confusion matrix, per-class scores, the most
confident mistakes, and every test image's prediction beside its true class."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from project.images import prediction_header, prediction_row


class EvaluationReport(Callback):
    """Writes what the test split's figures are made of, whenever ``test`` runs (also the test
    that ends ``fit``), into the run folder:

    - ``confusion_matrix.csv``: rows are true classes, columns predicted ones, in counts;
      and as a picture (torchmetrics' plot) in TensorBoard, ``test/confusion_matrix``;
    - ``per_class.csv``: each class's precision, recall, F1 and support (test images);
    - ``predictions.csv``: every test image with its true class, the predicted one, its
      probability and every class's (``predict``'s columns, with ``true`` after the path);
    - ``confident_mistakes.png``: the ``num_mistakes`` wrong predictions made with the
      highest probability, captioned true → predicted; also in TensorBoard,
      ``test/confident_mistakes``. Confident mistakes are where mislabelled images and
      classes that look alike show up first.

    In a distributed run every process's rows are gathered and put in the
    sampler's order, so each test image counts once. Needs matplotlib (the
    ``reports`` extra).

    Args:
        num_mistakes: How many mistakes the picture shows (0: no picture).
    """

    def __init__(self, num_mistakes: int = 16) -> None:
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("EvaluationReport draws with matplotlib: pip install -e '.[reports]'")
        if num_mistakes < 0:
            raise ValueError(f"num_mistakes must be 0 or more, got {num_mistakes}")
        self.num_mistakes = num_mistakes
        self._probabilities: list[Tensor] = []
        self._targets: list[Tensor] = []
        self.written: list[Path] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probabilities, self._targets, self.written = [], [], []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        logits = outputs if isinstance(outputs, Tensor) else pl_module(batch[0])
        self._probabilities.append(logits.detach().float().softmax(dim=1).cpu())
        self._targets.append(batch[1].detach().cpu())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._probabilities:
            return
        loader = trainer.test_dataloaders
        # Asked on every process: in a distributed run log_dir is a broadcast.
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        probabilities, targets = torch.cat(self._probabilities), torch.cat(self._targets)
        # Which dataset sample each row is: the evaluation sampler's order (no shuffling).
        order = torch.tensor(list(iter(loader.sampler))[: len(targets)])
        if trainer.world_size > 1:
            parts: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(parts, (order, probabilities, targets))
            order, probabilities, targets = (torch.cat(p) for p in zip(*parts, strict=True))
        if not trainer.is_global_zero:
            return
        ranked = order.argsort()
        order, probabilities, targets = order[ranked], probabilities[ranked], targets[ranked]
        names = list(getattr(pl_module, "class_names", None) or range(probabilities.shape[1]))
        folder.mkdir(parents=True, exist_ok=True)
        dataset = loader.dataset
        paths = [_name(dataset, int(i)) for i in order]
        self.written = [
            self._confusion_matrix(trainer, folder, probabilities, targets, names),
            _per_class(folder, probabilities, targets, names),
            _predictions(folder, paths, probabilities, targets, names),
        ]
        if self.num_mistakes:
            mistakes = self._confident_mistakes(
                trainer, folder, dataset, order, probabilities, targets, names
            )
            self.written += [mistakes] if mistakes else []
        rank_zero_info(f"Evaluation report ({len(targets)} test images): {folder}")

    def _confusion_matrix(
        self, trainer: L.Trainer, folder: Path, probabilities: Tensor, targets: Tensor, names: list
    ) -> Path:
        # The rows of every process are here already: no second gather (rank 0 alone runs this).
        matrix = multiclass_confusion_matrix(probabilities, targets, num_classes=len(names))
        metric = MulticlassConfusionMatrix(num_classes=len(names), sync_on_compute=False)
        path = folder / "confusion_matrix.csv"
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["true \\ predicted", *names])
            for name, row in zip(names, matrix.tolist(), strict=True):
                writer.writerow([name, *row])
        figure, _ = metric.plot(val=matrix, labels=[str(n) for n in names])
        _show(trainer, "test/confusion_matrix", figure, folder / "confusion_matrix.png")
        return path

    def _confident_mistakes(
        self,
        trainer: L.Trainer,
        folder: Path,
        dataset: Any,
        order: Tensor,
        probabilities: Tensor,
        targets: Tensor,
        names: list,
    ) -> Path | None:
        import matplotlib.pyplot as plt

        confidence, predicted = probabilities.max(dim=1)
        wrong = (predicted != targets).nonzero().flatten()
        if len(wrong) == 0:
            return None
        shown = wrong[confidence[wrong].argsort(descending=True)][: self.num_mistakes]
        columns = min(8, len(shown))
        rows = -(-len(shown) // columns)
        size = (1.6 * columns, 2.1 * rows)
        figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, row in zip(axes.flat, shown, strict=False):
            image = dataset[int(order[row])][0]
            axis.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=255)
            axis.set_title(
                f"{names[int(targets[row])]} → {names[int(predicted[row])]}\n"
                f"p={float(confidence[row]):.2f}",
                fontsize=8,
            )
        figure.suptitle("most confident mistakes: true → predicted", fontsize=9)
        figure.tight_layout()
        path = folder / "confident_mistakes.png"
        _show(trainer, "test/confident_mistakes", figure, path)
        return path


def _name(dataset: Any, index: int) -> str:
    name = getattr(dataset, "name", None)
    return str(name(index)) if callable(name) else str(index)


def _per_class(folder: Path, probabilities: Tensor, targets: Tensor, names: list) -> Path:
    options = {"num_classes": len(names), "average": None}
    scores = [
        multiclass_precision(probabilities, targets, **options),
        multiclass_recall(probabilities, targets, **options),
        multiclass_f1_score(probabilities, targets, **options),
    ]
    support = torch.bincount(targets, minlength=len(names))
    path = folder / "per_class.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for index, name in enumerate(names):
            values = [f"{float(score[index]):.6f}" for score in scores]
            writer.writerow([name, *values, int(support[index])])
    return path


def _predictions(
    folder: Path, paths: list[str], probabilities: Tensor, targets: Tensor, names: list
) -> Path:
    path = folder / "predictions.csv"
    header = prediction_header(names)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([header[0], "true", *header[1:]])
        for name, row, target in zip(paths, probabilities, targets.tolist(), strict=True):
            cells = prediction_row(name, row, names)
            writer.writerow([cells[0], names[target], *cells[1:]])
    return path


def _show(trainer: L.Trainer, tag: str, figure: Any, path: Path) -> None:
    """Saves a matplotlib figure as ``path`` and logs it to each TensorBoard logger."""
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    plt.close(figure)
