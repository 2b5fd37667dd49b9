"""The evaluation transform, and the names of the augmentation presets.

Every transform works on uint8 ``(C, H, W)`` tensors with
``torchvision.transforms.v2``; conversion to float and normalization happen
later, once per batch, on the device. The presets themselves are in
:mod:`project.data.augment`, imported by the runs that name one.
"""

from __future__ import annotations

from typing import Literal

from torchvision.transforms import v2

from project.images import eval_transforms

Preset = Literal["none", "light", "standard", "strong"]
Size = int | tuple[int, int]

__all__ = ["Preset", "Size", "compose", "eval_transforms"]


def compose(transforms: list[v2.Transform]) -> v2.Transform:
    """Chains transforms; an empty list leaves images unchanged."""
    return v2.Compose(transforms) if transforms else v2.Identity()
