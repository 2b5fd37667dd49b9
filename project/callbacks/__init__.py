"""Callbacks for what Lightning does not do itself."""

from project.callbacks.predictions import PredictionWriter

__all__ = ["PredictionWriter"]
