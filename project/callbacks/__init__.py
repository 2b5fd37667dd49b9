"""The callbacks of every run: safe checkpoints and stops, data facts, predictions.

Optional callbacks are leaves, imported from their own modules:
``project.callbacks.averaging`` (EMA), ``project.callbacks.finetuning``
(staged unfreezing), ``project.callbacks.speed`` (channels-last, compile),
``project.callbacks.tuning`` (learning-rate and batch-size finders),
``project.callbacks.images`` (training images in TensorBoard),
``project.callbacks.progress`` (one line per epoch, for logs),
``project.callbacks.requeue`` (SLURM).
"""

from project.callbacks.checkpointing import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    RunDirectoryError,
    SaveOnInterrupt,
    TrainingInterrupted,
)
from project.callbacks.linking import LinkDataToModel
from project.callbacks.nonfinite import NonFiniteLossError, StopOnNonFiniteLoss
from project.callbacks.predictions import PredictionWriter

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "LinkDataToModel",
    "NonFiniteLossError",
    "PredictionWriter",
    "RunDirectoryError",
    "SaveOnInterrupt",
    "StopOnNonFiniteLoss",
    "TrainingInterrupted",
]
