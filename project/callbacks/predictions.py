"""Writes predictions.csv: one row per image with its predicted class and class probabilities."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from project.images import prediction_header, prediction_row


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` outputs as a CSV once the epoch ends (``written``: its path).

    Columns: ``path``, ``predicted`` (class name), ``probability`` (of the
    predicted class), then one per class name with its probability.

    Args:
        output: The CSV file; ``None`` writes ``predictions.csv`` in the run's log directory.
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.written: Path | None = None

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: list[Any],
        batch_indices: list[Any],
    ) -> None:
        rows = [
            (path, probabilities)
            for batch in predictions
            for path, probabilities in zip(
                batch["paths"], batch["probabilities"].float().cpu(), strict=False
            )
        ]
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            # The distributed sampler repeats samples to even out ranks.
            rows = list({path: probs for part in gathered for path, probs in part}.items())
        if trainer.is_global_zero:
            self.written = self._write(rows, pl_module.class_names, trainer)

    def _write(self, rows: list, class_names: list[str], trainer: L.Trainer) -> Path:
        path = (
            Path(self.output) if self.output else Path(trainer.log_dir or ".") / "predictions.csv"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(prediction_header(class_names))
            for image_path, probabilities in rows:
                writer.writerow(prediction_row(image_path, probabilities, class_names))
        rank_zero_info(f"Wrote {len(rows)} predictions to {path}")
        return path
