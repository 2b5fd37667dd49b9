"""LightningModules and the networks they train."""

from project.models.backbones import TorchvisionNet
from project.models.classifier import ImageClassifier
from project.models.distillation import DistillationClassifier
from project.models.nets import BasicBlock, ConvNet, ResNet
from project.models.transfer import TransferClassifier

__all__ = [
    "BasicBlock",
    "ConvNet",
    "DistillationClassifier",
    "ImageClassifier",
    "ResNet",
    "TorchvisionNet",
    "TransferClassifier",
]
