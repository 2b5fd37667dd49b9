"""The LightningModule and the networks of the default run.

Leaves import from their own modules: ``project.models.transfer``,
``project.models.backbones`` (torchvision networks), ``project.models.distillation``.
"""

from project.models.classifier import ImageClassifier
from project.models.nets import BasicBlock, ConvNet, ResNet

__all__ = ["BasicBlock", "ConvNet", "ImageClassifier", "ResNet"]
