"""Where images come from: one DataModule base and its sources."""

from project.data.csv import CSVDataModule
from project.data.datamodule import ImageDataModule
from project.data.digits import DigitsDataModule
from project.data.folder import ImageFolderDataModule
from project.data.torchvision_sources import TorchvisionDataModule

__all__ = [
    "CSVDataModule",
    "DigitsDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "TorchvisionDataModule",
]
