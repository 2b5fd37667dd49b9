"""The embedded default: scikit-learn's handwritten digits, written once as an image folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchvision.io import write_png

from project.data.folder import ImageFolderDataModule

DIGIT_CLASSES = [str(digit) for digit in range(10)]


def write_digits(root: Path) -> None:
    """Writes the 1,797 8x8 digits as grayscale PNGs under ``root/<digit>/``.

    The tree is built in a temporary sibling folder and renamed into place, so
    an interrupted write never leaves a half-filled ``root`` behind.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The bundled values are 0-16 ink levels; spread them over 0-255.
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)
    partial = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    for name in DIGIT_CLASSES:
        (partial / name).mkdir(parents=True)
    for index, (image, target) in enumerate(zip(images, digits.target, strict=True)):
        write_png(image.unsqueeze(0), str(partial / str(target) / f"{index:04d}.png"))
    try:
        partial.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
    rank_zero_info(f"Wrote {len(images)} digit images to {root}")


class DigitsDataModule(ImageFolderDataModule):
    """Handwritten digits 0-9 (8x8 grayscale, 1,797 images) that ship with scikit-learn.

    Works offline: on first use the images are written to ``root`` as PNG files
    in class folders and from then on read like any user's image folder.

    Args:
        root: Where the image folder is written and read.
        channels: 1 (the digits are grayscale); 3 repeats the gray channel for
            networks that need RGB.
        **kwargs: Everything :class:`ImageDataModule` takes.
    """

    def __init__(self, root: str = "data/digits", channels: int = 1, **kwargs: Any) -> None:
        super().__init__(root=root, channels=channels, **kwargs)

    def discover_classes(self) -> list[str]:
        return list(DIGIT_CLASSES)

    def prepare_data(self) -> None:
        if not self.root.is_dir():
            self.root.parent.mkdir(parents=True, exist_ok=True)
            write_digits(self.root)
