"""The augmentation presets (``data.augment``) and the fast pad-crop-flip transform.

Every transform here works on uint8 ``(C, H, W)`` tensors with
``torchvision.transforms.v2``. A run with its own ``data.train_transforms`` (the
default run) does not import this module.
"""

from __future__ import annotations

from typing import get_args

import torch
from torchvision.transforms import v2

from project.data.transforms import Preset, Size, eval_transforms

PRESETS: tuple[str, ...] = get_args(Preset)


class RandomPadCropFlip(v2.Transform):
    """A random crop of the zero-padded image, then a horizontal flip with probability 0.5.

    The same augmentation as ``v2.RandomCrop(size, padding, pad_if_needed=True)``
    followed by ``v2.RandomHorizontalFlip()``, in one step that copies only the
    pixels it keeps: on small images (32 px) the two v2 transforms spend most of
    their time in per-call dispatch, and this runs several times faster. Takes
    plain uint8 or float ``(C, H, W)`` tensors.

    Args:
        size: Output side, or ``(height, width)``.
        padding: Zero border added on every side before cropping; images smaller
            than ``size`` get more, so any image works.
        horizontal_flip: Mirror half of the images.
    """

    def __init__(self, size: Size, padding: int, horizontal_flip: bool = True) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = padding
        self.horizontal_flip = horizontal_flip

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.ndim < 3:
            raise TypeError(
                f"RandomPadCropFlip takes a (C, H, W) image tensor, got {type(image).__name__}"
            )
        height, width = image.shape[-2:]
        out_h, out_w = self.size
        # Border on each side: the padding, or more where the image is smaller than the crop.
        pad_h = max(self.padding, -(-(out_h - height) // 2))
        pad_w = max(self.padding, -(-(out_w - width) // 2))
        # One draw for both offsets and the flip.
        draws = torch.randint(0, 1 << 30, (3,)).tolist()
        top = draws[0] % (height + 2 * pad_h - out_h + 1) - pad_h
        left = draws[1] % (width + 2 * pad_w - out_w + 1) - pad_w
        out = image.new_zeros((*image.shape[:-2], out_h, out_w))
        rows = slice(max(top, 0), min(top + out_h, height))
        cols = slice(max(left, 0), min(left + out_w, width))
        if rows.start < rows.stop and cols.start < cols.stop:
            out[..., rows.start - top : rows.stop - top, cols.start - left : cols.stop - left] = (
                image[..., rows, cols]
            )
        if self.horizontal_flip and draws[2] % 2:
            out = out.flip(-1)
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, horizontal_flip={self.horizontal_flip}"


def train_preset(
    name: str, crop_size: Size, resize_size: int | None, horizontal_flip: bool = True
) -> list[v2.Transform]:
    """The training augmentations of a named preset, ending at ``crop_size``.

    Presets:
        ``none``: the evaluation transform, no randomness.
        ``light``: shifts by random crops of the zero-padded image (padding 1/8 of
            the side) and horizontal flips: the CIFAR recipe, for small images.
        ``standard``: RandomResizedCrop (25-100 % of the area), horizontal flips,
            rotations up to 10 degrees and ColorJitter(0.2, 0.2, 0.2, 0.1): photos.
        ``strong``: RandomResizedCrop (8-100 %), horizontal flips, TrivialAugmentWide
            and RandomErasing: large datasets and long runs.

    Args:
        name: One of the presets above.
        crop_size: Side (or ``(height, width)``) of the images the network sees.
        resize_size: Shorter side the evaluation transform resizes to before its
            centre crop; ``light`` resizes to it too, so objects keep the scale they
            have at evaluation. ``None``: the images already have ``crop_size``.
        horizontal_flip: Mirror images at random. Turn off where a mirror image
            belongs to another class or none (digits, text).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of {list(PRESETS)}")
    flip = [v2.RandomHorizontalFlip()] if horizontal_flip else []
    side = min(crop_size) if isinstance(crop_size, tuple) else crop_size
    if name == "none":
        return eval_transforms(crop_size, resize_size) if resize_size else []
    if name == "light":
        resize = [v2.Resize(resize_size, antialias=True)] if resize_size else []
        return [*resize, RandomPadCropFlip(crop_size, max(1, side // 8), horizontal_flip)]
    if name == "standard":
        return [
            v2.RandomResizedCrop(crop_size, scale=(0.25, 1.0), antialias=True),
            *flip,
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1),
        ]
    return [
        v2.RandomResizedCrop(crop_size, antialias=True),
        *flip,
        v2.TrivialAugmentWide(),
        v2.RandomErasing(p=0.25),
    ]
