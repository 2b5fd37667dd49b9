"""The LightningModule and the network of the default run.

The other networks and models are leaves (``leaves.yaml``, the README's
"Leaves"), each imported from its own module by its class path, so this package
never loads them.
"""

from project.models.classifier import ImageClassifier
from project.models.nets import ConvNet

__all__ = ["ConvNet", "ImageClassifier"]
