"""Losses for image classification, each a plain ``nn.Module`` chosen in YAML.

Every loss takes ``(logits, targets)`` with logits ``(N, C)`` and targets either
class indices ``(N,)`` or class probabilities ``(N, C)`` (MixUp, CutMix); the
distillation loss also takes the teacher's logits.
"""

from project.losses.base import ClassificationLoss, class_weights_from_counts
from project.losses.cross_entropy import LabelSmoothingCrossEntropy, PolyLoss, WeightedCrossEntropy
from project.losses.distillation import DistillationLoss
from project.losses.focal import FocalLoss, SigmoidFocalLoss
from project.losses.weighted_sum import WeightedSum

__all__ = [
    "ClassificationLoss",
    "DistillationLoss",
    "FocalLoss",
    "LabelSmoothingCrossEntropy",
    "PolyLoss",
    "SigmoidFocalLoss",
    "WeightedCrossEntropy",
    "WeightedSum",
    "class_weights_from_counts",
]
