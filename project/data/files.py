"""The images of a dataset, from files or memory, and the dataset serving them.

Finding and decoding files: :mod:`project.images`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from project.exceptions import InputValueError
from project.images import load_image, match_channels


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
