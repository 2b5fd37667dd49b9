"""The evaluation transform, and the names of the augmentation presets.

Every transform works on uint8 ``(C, H, W)`` tensors with
``torchvision.transforms.v2``; conversion to float and normalization happen
later, once per batch, on the device. The presets themselves are in
:mod:`project.data.augment`, imported by the runs that name one.
"""

from __future__ import annotations

from typing import Literal

from torchvision.transforms import v2

Preset = Literal["none", "light", "standard", "strong"]
Size = int | tuple[int, int]


def compose(transforms: list[v2.Transform]) -> v2.Transform:
    """Chains transforms; an empty list leaves images unchanged."""
    return v2.Compose(transforms) if transforms else v2.Identity()


def eval_transforms(crop_size: Size | None, resize_size: int | None) -> list[v2.Transform]:
    """Deterministic: resize the shorter side to ``resize_size``, then centre-crop ``crop_size``.

    ``crop_size=None`` keeps the images as they are (they must share one size).
    """
    if crop_size is None:
        return []
    return [v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size)]
