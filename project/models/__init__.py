"""The LightningModule and the network of the default run.

Others import from their own modules: ``project.models.resnet``,
``project.models.transfer``, ``project.models.backbones`` (torchvision networks),
``project.models.distillation``.
"""

from project.models.classifier import ImageClassifier
from project.models.nets import ConvNet

__all__ = ["ConvNet", "ImageClassifier"]
