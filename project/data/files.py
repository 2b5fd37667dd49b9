"""Image files on disk: finding them, decoding them, and the dataset that serves them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_mode(channels: int) -> ImageReadMode:
    """The decode mode that yields ``channels`` channels (1: grayscale, 3: RGB)."""
    modes = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
    if channels not in modes:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return modes[channels]


def load_image(path: str | Path, channels: int) -> torch.Tensor:
    """Decodes one file into a ``(channels, H, W)`` uint8 tensor.

    Palette, RGBA, 16-bit and CMYK files are converted by the decoder to the
    requested mode, so every image of a dataset has the same channel count.
    """
    image = decode_image(str(path), mode=read_mode(channels))
    if image.dtype != torch.uint8:  # 16-bit PNGs decode to uint16
        image = (image.to(torch.float32) / 257.0).round().to(torch.uint8)
    return image


def list_images(folder: Path) -> list[Path]:
    """Image files directly or deeper under ``folder``, sorted, hidden files left out."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


class ImageFileDataset(Dataset):
    """Images read from files, with an integer target per file.

    Args:
        paths: One file per sample.
        targets: The class index of each file; for unlabelled data (prediction)
            pass ``None`` and each sample's target is its file path instead.
        channels: 1 for grayscale, 3 for RGB.
        transform: Applied to the decoded uint8 image on every access, so random
            augmentations differ from epoch to epoch.
        cache: Decode every image once, now, and keep the uint8 tensors in memory;
            worker processes forked later share them instead of decoding again.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        targets: Sequence[int] | None,
        channels: int,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: bool = False,
    ) -> None:
        if targets is not None and len(targets) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(targets)} targets")
        self.paths = list(paths)
        self.targets = None if targets is None else list(targets)
        self.channels = channels
        self.transform = transform
        self._cache = [load_image(path, channels) for path in self.paths] if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        """The decoded, untransformed uint8 image of sample ``index``."""
        if self._cache is None:
            return load_image(self.paths[index], self.channels)
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | str]:
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        target = str(self.paths[index]) if self.targets is None else self.targets[index]
        return image, target
