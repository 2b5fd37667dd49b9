"""Where images come from: one DataModule base and its sources."""

from project.data.datamodule import ImageDataModule
from project.data.digits import DigitsDataModule
from project.data.folder import ImageFolderDataModule

__all__ = ["DigitsDataModule", "ImageDataModule", "ImageFolderDataModule"]
