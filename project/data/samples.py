"""What a source found, and the setup check that keeps only the images that decode."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from project.data.check import FileCheck, check_files
from project.data.files import DecodedImages, ImageFiles, ImageStore


@dataclass
class Samples:
    """What a source found: its images, their class indices, and any split it defines itself.

    Attributes:
        store: The images (files to decode, or arrays already in memory).
        targets: Class index of each image.
        split: Per image, "train", "val" or "test" where the source says so (a
            pre-split folder tree, a CSV split column, a dataset's official test
            set); ``None`` lets the DataModule draw a stratified, seeded split.
        skipped: ``(file or row, reason)`` of what the source could not use;
            reported at setup.
    """

    store: ImageStore
    targets: list[int]
    split: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def default_num_workers() -> int:
    """Loader processes: one per spare core, at most 8 (each is a process with its own memory)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def checked_samples(
    samples: Samples, channels: int, num_workers: int, cache: bool, shrink_to: int | None
) -> tuple[Samples, FileCheck, list[tuple[str, str]]]:
    """Decodes every file; drops the unreadable ones; keeps the images when caching."""
    store = samples.store
    assert isinstance(store, ImageFiles)
    check = check_files(
        store.paths, channels, num_workers=num_workers, keep_images=cache, shrink_to=shrink_to
    )
    paths = [store.paths[i] for i in check.readable]
    new_store: ImageStore = ImageFiles(paths, channels)
    if cache and check.images is not None:
        same_shape = len({tuple(image.shape) for image in check.images}) == 1
        images = torch.stack(check.images) if same_shape else check.images
        new_store = DecodedImages(images, [str(p) for p in paths], channels)
        check.images = None  # now owned by the store
    kept = Samples(
        new_store,
        [samples.targets[i] for i in check.readable],
        None if samples.split is None else [samples.split[i] for i in check.readable],
    )
    return kept, check, check.unreadable
