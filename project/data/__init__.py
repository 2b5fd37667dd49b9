"""Where images come from: the DataModule base, image folders and the embedded digits.

Other sources are leaves (``leaves.yaml``, the README's "Leaves"), each imported
from its own module by its class path, so this package never loads them.
"""

from project.data.datamodule import ImageDataModule
from project.data.digits import DigitsDataModule
from project.data.folder import ImageFolderDataModule

__all__ = ["DigitsDataModule", "ImageDataModule", "ImageFolderDataModule"]
