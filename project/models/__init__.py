"""LightningModules and the networks they train."""

from project.models.classifier import ImageClassifier
from project.models.nets import ConvNet

__all__ = ["ConvNet", "ImageClassifier"]
