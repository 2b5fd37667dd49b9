"""Callbacks for what Lightning does not do itself."""

from project.callbacks.averaging import EMAWeights
from project.callbacks.checkpointing import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    RunDirectoryError,
    SaveOnInterrupt,
    TrainingInterrupted,
)
from project.callbacks.finetuning import StagedUnfreeze
from project.callbacks.images import TrainingImageGrid
from project.callbacks.linking import LinkDataToModel
from project.callbacks.nonfinite import NonFiniteLossError, StopOnNonFiniteLoss
from project.callbacks.predictions import PredictionWriter
from project.callbacks.progress import PlainProgress
from project.callbacks.speed import ChannelsLast, TorchCompile
from project.callbacks.tuning import PlottedLearningRateFinder, ScheduledBatchSizeFinder

__all__ = [
    "AtomicCheckpointIO",
    "ChannelsLast",
    "CheckpointWriteError",
    "EMAWeights",
    "LinkDataToModel",
    "NonFiniteLossError",
    "PlainProgress",
    "PlottedLearningRateFinder",
    "PredictionWriter",
    "RunDirectoryError",
    "SaveOnInterrupt",
    "ScheduledBatchSizeFinder",
    "StagedUnfreeze",
    "StopOnNonFiniteLoss",
    "TorchCompile",
    "TrainingImageGrid",
    "TrainingInterrupted",
]
