"""Finding image files, decoding them into uint8 tensors, the evaluation resize and crop, and
the rows of a predictions CSV.

Training (``project.data``) and standalone inference (``project.infer``) share
these, so a new photo reaches an exported model as the test images reached the
trained one, and both write the same CSV. Imports only torch, torchvision, numpy
and Pillow.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_is_intact(data: bytes) -> bool:
    """Whether every chunk of a PNG file is whole and passes its CRC, up to the closing IEND.

    torchvision's PNG decoder ends the process (a segmentation fault) on a libpng
    error such as a damaged compressed stream, instead of raising: a file that
    fails this check goes to Pillow, which raises an error that names the damage.
    """
    view, position = memoryview(data), len(PNG_SIGNATURE)
    while position + 12 <= len(view):
        length = int.from_bytes(view[position : position + 4], "big")
        end = position + 8 + length  # after the length, the type and the data
        if end + 4 > len(view):
            return False
        if zlib.crc32(view[position + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            return False
        if view[position + 4 : position + 8] == b"IEND":
            return True
        position = end + 4
    return False


def _load_with_pil(path: Path, channels: int) -> torch.Tensor:
    # Pillow covers what torchvision.io does not decode (BMP, TIFF, ...).
    from PIL import Image

    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as error:  # more pixels than Image.MAX_IMAGE_PIXELS
        raise ValueError(str(error)) from None
    with opened as image:
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
    (BMP, TIFF), and PNG files that fail :func:`png_is_intact`, by Pillow.
    Palette, RGBA, 16-bit and CMYK files are converted to the requested mode, so
    every image of a dataset has the same channel count; an animated GIF gives
    its first frame.

    Raises:
        UnreadableImageError: The file is missing, truncated or not an image.
    """
    try:
        data = Path(path).read_bytes()
        if not data or (data.startswith(PNG_SIGNATURE) and not png_is_intact(data)):
            raise RuntimeError("empty, or a PNG chunk cut short or failing its CRC")
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = decode_image(encoded, mode=read_mode(channels))
    except (OSError, RuntimeError):
        try:
            image = _load_with_pil(Path(path), channels)
        except (OSError, ValueError, SyntaxError) as error:
            # Pillow's messages ("image file is truncated", "cannot identify
            # image file") read better than the C++ source locations torchvision gives.
            raise UnreadableImageError(path, str(error) or type(error).__name__) from None
    if image.ndim == 4:  # the frames of an animated GIF
        image = image[0]
    # GIF and WebP ignore the requested grayscale mode.
    return match_channels(to_uint8(image), channels)


def scan_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (any depth), and the other files found there, both sorted.

    The files :func:`visible_files` lists. Paths sort folder by folder, as
    ``pathlib`` orders them, so a split drawn from this order stays the same.
    """
    images, others = [], []
    for path in visible_files(folder):
        (images if is_image_name(path) else others).append(path)
    return _sorted_paths(images), _sorted_paths(others)


def is_image_name(path: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def visible_files(folder: Path) -> Iterator[str]:
    """The files under ``folder`` (any depth) that are not hidden, in the order found.

    Linked folders are followed, each real folder once, except a link to
    ``folder`` itself or to a folder above it (a loop, which would also bring in
    its neighbours' files).
    """
    top = os.path.realpath(folder)
    seen = {top}
    # os.walk lists with scandir: a tenth of rglob's time on tens of thousands of files.
    for directory, folders, files in os.walk(folder, followlinks=True):
        kept = []
        for name in folders:
            real = os.path.realpath(os.path.join(directory, name))
            above = top.startswith(os.path.join(real, ""))
            if not name.startswith(".") and real not in seen and not above:
                seen.add(real)
                kept.append(name)
        folders[:] = kept
        yield from (os.path.join(directory, name) for name in files if not name.startswith("."))


def _sorted_paths(paths: list[str]) -> list[Path]:
    return [Path(path) for path in sorted(paths, key=lambda path: path.split(os.sep))]


def eval_transforms(crop_size: int | tuple[int, int] | None, resize_size: int | None) -> list:
    """Deterministic: resize the shorter side to ``resize_size``, then centre-crop ``crop_size``.

    ``crop_size=None`` keeps the images as they are (they must share one size).
    """
    if crop_size is None:
        return []
    return [v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size)]


def prediction_header(class_names: list[str]) -> list[str]:
    """The columns of a predictions CSV: ``path``, ``predicted``, ``probability``, each class."""
    return ["path", "predicted", "probability", *class_names]


def prediction_row(path: str | Path, probabilities: torch.Tensor, class_names: list[str]) -> list:
    """One image's row: its path, the predicted class name, its probability, every class's."""
    best = int(probabilities.argmax())
    shown = [f"{float(p):.6f}" for p in probabilities]
    return [str(path), class_names[best], shown[best], *shown]
