"""The callbacks of every run: safe checkpoints and stops, data facts, progress, reports.

Optional callbacks are leaves, imported from their own modules:
``project.callbacks.averaging`` (EMA), ``project.callbacks.finetuning``
(staged unfreezing), ``project.callbacks.speed`` (channels-last, compile),
``project.callbacks.tuning`` (learning-rate and batch-size finders).
"""

from project.callbacks.checkpointing import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    RunDirectoryError,
    SaveOnInterrupt,
    TrainingInterrupted,
)
from project.callbacks.images import TrainingImageGrid
from project.callbacks.linking import LinkDataToModel
from project.callbacks.nonfinite import NonFiniteLossError, StopOnNonFiniteLoss
from project.callbacks.predictions import PredictionWriter
from project.callbacks.progress import PlainProgress

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "LinkDataToModel",
    "NonFiniteLossError",
    "PlainProgress",
    "PredictionWriter",
    "RunDirectoryError",
    "SaveOnInterrupt",
    "StopOnNonFiniteLoss",
    "TrainingImageGrid",
    "TrainingInterrupted",
]
