"""The setup-time check: every file decoded once, in parallel, and remembered until it changes.

A corrupt image is reported when the run starts, not mid-epoch, and the check
yields the shapes and pixel sums the normalization statistics need. Results are
kept per file (path, size, modification time) by :mod:`project.data.remembered`,
so the next run decodes only what is new or changed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from project.images import UnreadableImageError, load_image

# Seconds between progress lines while a check runs.
PROGRESS_EVERY = 5.0
# Below this many files the check runs in this process: workers cost more to start.
PARALLEL_FROM = 256


@dataclass
class FileCheck:
    """What decoding every file once at setup found.

    ``readable`` are positions in the checked list; ``shapes`` (``(C, H, W)``),
    ``sums`` and ``squares`` (per-channel sums of the 0-255 values and of their
    squares; empty when the images are kept) have one row per readable file.
    """

    readable: list[int]
    unreadable: list[tuple[str, str]]
    shapes: list[tuple[int, int, int]]
    sums: torch.Tensor
    squares: torch.Tensor
    images: list[torch.Tensor] | None


LEVELS = torch.arange(256, dtype=torch.int64)


def pixel_moments(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel sums of a uint8 ``(C, H, W)`` image's values and of their squares."""
    if image[0].numel() <= 16384:
        # Small images: two integer reductions (int32 holds 255**2; sum() gives int64).
        values = image.reshape(image.shape[0], -1).to(torch.int32)
        return values.sum(dim=1), (values * values).sum(dim=1)
    # Large images: a histogram per channel reads the pixels once, with no wide copy.
    counts = torch.stack([torch.bincount(channel.flatten(), minlength=256) for channel in image])
    return counts @ LEVELS, counts @ (LEVELS * LEVELS)


class _DecodeEach(Dataset):
    """Decodes one file per item, reporting failures instead of raising them.

    Items hold numbers and numpy arrays, never tensors: a tensor handed back by a
    worker process travels as an open file descriptor, and thousands of them
    held at once exceed the usual limit of 1,024 ("received 0 items of ancdata").
    """

    def __init__(self, paths: Sequence[Path], channels: int, keep: bool, shrink_to: int | None):
        self.paths = list(paths)
        self.channels = channels
        self.keep = keep
        self.shrink_to = shrink_to

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        try:
            image = load_image(self.paths[index], self.channels)
        except UnreadableImageError as error:
            return index, error.reason, None, None, None, None
        shape = tuple(image.shape)
        if not self.keep:
            sums, squares = pixel_moments(image)
            return index, None, shape, sums.tolist(), squares.tolist(), None
        # Kept images are summed later in bulk, much faster than one by one.
        if self.shrink_to is not None and min(shape[1:]) > self.shrink_to:
            image = F.resize(image, self.shrink_to, antialias=True)
        return index, None, shape, None, None, image.numpy()


def _as_list(items: list) -> list:
    return items


def check_files(
    paths: Sequence[Path],
    channels: int,
    num_workers: int = 0,
    keep_images: bool = False,
    shrink_to: int | None = None,
    remember: bool = True,
) -> FileCheck:
    """Decodes every file once, in ``num_workers`` processes, and reports what it found.

    Args:
        keep_images: Return the decoded images too (the in-memory cache); such a
            check decodes every file and is not remembered.
        shrink_to: With ``keep_images``, resize kept images whose shorter side is
            longer than this to it, so a cache of large photos stays small.
        remember: Reuse and update the results of earlier checks of the same files.
    """
    if keep_images or not remember:
        return _decode(paths, channels, num_workers, keep_images, shrink_to)
    from project.data.remembered import Record  # only runs that read files from disk need it

    record = Record(paths, channels)
    todo = record.unchecked()
    if todo:
        checked = [paths[i] for i in todo]
        fresh = _decode(checked, channels, num_workers, False, None)
        record.update(todo, fresh, [str(path) for path in checked])
        record.save()
    elif paths:
        rank_zero_info(
            f"File check: {len(paths):,} files unchanged since they were last checked "
            f"(delete {record.path} to check them again)"
        )
    return record.result()


def _decode(
    paths: Sequence[Path], channels: int, num_workers: int, keep: bool, shrink_to: int | None
) -> FileCheck:
    loader = DataLoader(
        _DecodeEach(paths, channels, keep, shrink_to),
        batch_size=64,
        num_workers=num_workers if len(paths) > PARALLEL_FROM else 0,
        collate_fn=_as_list,
    )
    readable, unreadable, shapes, sums, squares, images = [], [], [], [], [], []
    threads = torch.get_num_threads()
    if loader.num_workers == 0:
        # One image at a time is too little work to split across threads; on a
        # busy machine their start-up costs 10-50x the work (workers run one too).
        torch.set_num_threads(1)
    start = last = time.monotonic()
    try:
        for batch in loader:
            for index, reason, shape, image_sums, image_squares, image in batch:
                if reason is not None:
                    unreadable.append((str(paths[index]), reason))
                    continue
                readable.append(index)
                shapes.append(shape)
                if image_sums is not None:
                    sums.append(image_sums)
                    squares.append(image_squares)
                if keep:
                    images.append(torch.from_numpy(image))
            if time.monotonic() - last >= PROGRESS_EVERY:
                last, done = time.monotonic(), len(readable) + len(unreadable)
                rate = done / (last - start)
                rank_zero_info(
                    f"File check: {done:,} of {len(paths):,} files decoded "
                    f"({rate:,.0f}/s, about {(len(paths) - done) / rate:.0f} s left)"
                )
    finally:
        torch.set_num_threads(threads)
    seconds, workers = time.monotonic() - start, loader.num_workers
    if seconds >= PROGRESS_EVERY:
        rank_zero_info(
            f"File check: {len(paths):,} files decoded in {seconds:.0f} s with "
            f"{workers} worker process{'' if workers == 1 else 'es'}; "
            "unchanged files are not decoded again"
        )
    return FileCheck(
        readable=readable,
        unreadable=unreadable,
        shapes=shapes,
        sums=torch.tensor(sums, dtype=torch.int64).reshape(-1, channels),
        squares=torch.tensor(squares, dtype=torch.int64).reshape(-1, channels),
        images=images if keep else None,
    )
