"""Where images come from: the DataModule base, image folders and the embedded digits.

Other sources are leaves, imported from their own modules: ``project.data.csv``
(a CSV of paths and labels), ``project.data.torchvision_sources`` (MNIST,
FashionMNIST, CIFAR-10).
"""

from project.data.datamodule import ImageDataModule
from project.data.digits import DigitsDataModule
from project.data.folder import ImageFolderDataModule

__all__ = ["DigitsDataModule", "ImageDataModule", "ImageFolderDataModule"]
