"""The callbacks of every run: safe checkpoints and stops, data facts, predictions.

Optional callbacks are leaves (``leaves.yaml``, the README's "Leaves"), each
imported from its own module by its class path, so this package never loads
them and deleting one deletes nothing else.
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
