"""Images: finding files, decoding them, and the dataset serving them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from project.exceptions import InputValueError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class UnreadableImageError(InputValueError):
    """A file that cannot be decoded as an image; names the file and the decoder's reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_mode(channels: int) -> ImageReadMode:
    """The decode mode that yields ``channels`` channels (1: grayscale, 3: RGB)."""
    modes = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
    if channels not in modes:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return modes[channels]


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Converts uint8 ``(..., C, H, W)`` images to ``channels`` (gray <-> RGB, alpha dropped)."""
    have = image.shape[-3]
    if have in (2, 4):  # gray + alpha, RGB + alpha
        have -= 1
        image = image[..., :have, :, :]
    if have == channels:
        return image
    if channels == 3:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:]).contiguous()
    return F.rgb_to_grayscale(image)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """16-bit images (PNG, TIFF) scaled to 8 bits, clamped to 0-255; uint8 passes unchanged."""
    if image.dtype == torch.uint8:
        return image
    return (image.to(torch.float32) / 257.0).round().clamp(0, 255).to(torch.uint8)


def _load_with_pil(path: Path, channels: int) -> torch.Tensor:
    # Pillow covers what torchvision.io does not decode (BMP, TIFF, ...).
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode.startswith("I;16") or image.mode == "I":
            array = np.asarray(image, dtype=np.int32)
            return match_channels(to_uint8(torch.from_numpy(array).unsqueeze(0)), channels)
        converted = image.convert("L" if channels == 1 else "RGB")
        array = np.asarray(converted, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def load_image(path: str | Path, channels: int) -> torch.Tensor:
    """Decodes one file into a ``(channels, H, W)`` uint8 tensor.

    JPEG, PNG, GIF and WebP are decoded by ``torchvision.io``; other formats
    (BMP, TIFF) by Pillow. Palette, RGBA, 16-bit and CMYK files are converted to
    the requested mode, so every image of a dataset has the same channel count.

    Raises:
        UnreadableImageError: The file is missing, truncated or not an image.
    """
    try:
        image = decode_image(str(path), mode=read_mode(channels))
    except RuntimeError:
        try:
            image = _load_with_pil(Path(path), channels)
        except (OSError, ValueError, SyntaxError) as error:
            # Pillow's messages ("image file is truncated", "cannot identify
            # image file") read better than the C++ source locations torchvision gives.
            raise UnreadableImageError(path, str(error) or type(error).__name__) from None
    # GIF and WebP ignore the requested grayscale mode.
    return match_channels(to_uint8(image), channels)


def scan_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (any depth), and the other files found there, both sorted.

    Hidden files and folders are left out. Paths sort folder by folder, as
    ``pathlib`` orders them, so a split drawn from this order stays the same.
    """
    images, others = [], []
    # os.walk lists with scandir: a tenth of rglob's time on tens of thousands of files.
    for directory, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            found = images if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS else others
            found.append(os.path.join(directory, name))
    return _sorted_paths(images), _sorted_paths(others)


def _sorted_paths(paths: list[str]) -> list[Path]:
    return [Path(path) for path in sorted(paths, key=lambda path: path.split(os.sep))]


class ImageFiles:
    """Images decoded from their files on every access."""

    def __init__(self, paths: Sequence[Path], channels: int) -> None:
        self.paths = list(paths)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.channels)

    def name(self, index: int) -> str:
        return str(self.paths[index])


class DecodedImages:
    """Images already decoded in memory, converted to ``channels`` on access.

    Args:
        images: One ``(N, C, H, W)`` uint8 tensor or a list of ``(C, H, W)`` ones.
        names: Each image's file path, or ``<dataset>/<split>/<index>`` for arrays.
    """

    def __init__(
        self, images: torch.Tensor | list[torch.Tensor], names: Sequence[str], channels: int
    ) -> None:
        if len(images) != len(names):
            raise ValueError(f"{len(images)} images but {len(names)} names")
        # No copy per worker process: forked workers share these pages with the
        # main process, and under spawn torch moves the tensor to shared memory
        # once, when the dataset is first sent to a worker.
        self.images = images
        self.names = list(names)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return match_channels(self.images[index], self.channels)

    def name(self, index: int) -> str:
        return self.names[index]


ImageStore = ImageFiles | DecodedImages


class ImageDataset(Dataset):
    """The images ``indices`` of a store (splits share one), with their targets and a transform.

    ``targets`` is ``None`` for unlabelled data, which needs ``return_names``: then
    each item is the image with its name (file path) instead of its target.
    """

    def __init__(
        self,
        store: ImageStore,
        indices: Sequence[int],
        targets: Sequence[int] | None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        return_names: bool = False,
    ) -> None:
        if targets is not None and len(targets) != len(indices):
            raise ValueError(f"{len(indices)} samples but {len(targets)} targets")
        if targets is None and not return_names:
            raise ValueError("unlabelled samples (targets=None) need return_names=True")
        self.store = store
        self.indices = list(indices)
        self.targets = None if targets is None else list(targets)
        self.transform = transform
        self.return_names = return_names

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, index: int) -> torch.Tensor:
        """The decoded, untransformed uint8 image of sample ``index``."""
        return self.store[self.indices[index]]

    def name(self, index: int) -> str:
        """The file path (or in-memory name) of sample ``index``."""
        return self.store.name(self.indices[index])

    @property
    def paths(self) -> list[str]:
        """Every sample's file path (or in-memory name), in order."""
        return [self.name(i) for i in range(len(self))]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | str]:
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        if self.return_names:
            return image, self.name(index)
        return image, self.targets[index]


def common_size(store: ImageStore, checked: Any) -> int | tuple[int, int]:
    """The one size all images share (needed when ``image_size`` is not set), or an error.

    ``checked`` is the setup check's ``FileCheck``; without one the first image stands for all.
    """
    if checked is not None:
        sizes = [shape[1:] for shape in checked.shapes]
        names = [store.name(i) for i in range(len(store))]
    elif isinstance(store, DecodedImages) and isinstance(store.images, torch.Tensor):
        sizes, names = [tuple(store.images.shape[-2:])], [store.name(0)]
    else:
        sizes, names = [tuple(store[0].shape[-2:])], [store.name(0)]
    distinct = {}
    for size, name in zip(sizes, names, strict=True):
        distinct.setdefault(size, name)
    if len(distinct) > 1:
        shown = list(distinct.items())[:3]
        examples = ", ".join(f"{name} is {h}x{w}" for (h, w), name in shown)
        raise InputValueError(
            f"images differ in size ({examples}); set data.image_size (e.g. "
            f"data.image_size: {min(min(s) for s in distinct)}) to resize and crop them"
        )
    height, width = next(iter(distinct))
    return height if height == width else (height, width)


def try_train_transform(train: ImageDataset, checked: Any) -> None:
    """Runs the training transform on the smallest and largest image now, not mid-epoch.

    Catches a crop larger than the images and transforms whose output size
    varies (which batching cannot stack).
    """
    if len(train) == 0:
        return
    positions = [0]
    if checked is not None:
        areas = [checked.shapes[i][1] * checked.shapes[i][2] for i in train.indices]
        positions = sorted({areas.index(min(areas)), areas.index(max(areas))})
    shapes = {}
    for position in positions:
        try:
            shapes[train.name(position)] = tuple(train[position][0].shape)
        except Exception as error:
            raise InputValueError(
                f"the training transform fails on {train.name(position)} "
                f"({'x'.join(map(str, train.image(position).shape[1:]))} pixels): {error}. "
                "Start data.train_transforms with a resize (v2.Resize) or a "
                "RandomResizedCrop, or set data.image_size and use a preset"
            ) from error
    if len(set(shapes.values())) > 1:
        raise InputValueError(
            f"the training transform gives images of different sizes ({shapes}); "
            "end data.train_transforms with a fixed-size crop (v2.CenterCrop, "
            "v2.RandomResizedCrop) so batches can be stacked"
        )
