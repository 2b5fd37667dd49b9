"""Per-channel mean and standard deviation of the training images, on the 0-1 scale."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from project.data.check import LEVELS, FileCheck, check_files
from project.data.files import DecodedImages, ImageStore
from project.images import match_channels


def split_statistics(
    store: ImageStore,
    indices: Sequence[int],
    checked: FileCheck | None,
    channels: int,
    seed: int,
    num_workers: int,
) -> tuple[list[float], list[float]]:
    """Mean and std of the images ``indices`` of ``store``, at their stored size.

    Decoded images are counted exactly; files the setup check decoded are free
    (it summed their pixels); unchecked files are sampled: 2,000 of them, seeded.
    """
    indices = list(indices)
    if isinstance(store, DecodedImages):
        if isinstance(store.images, torch.Tensor):
            chunks = (
                match_channels(store.images[indices[start : start + 4096]], channels)
                for start in range(0, len(indices), 4096)
            )
        else:
            chunks = (store[i] for i in indices)
        # How often each value 0-255 occurs in each channel.
        counts = torch.zeros(channels, 256, dtype=torch.int64)
        for chunk in chunks:
            for c in range(channels):
                counts[c] += torch.bincount(chunk[..., c, :, :].flatten(), minlength=256)
        return moment_statistics(counts @ LEVELS, counts @ LEVELS.square(), int(counts[0].sum()))
    if checked is not None:
        pixels = sum(checked.shapes[i][1] * checked.shapes[i][2] for i in indices)
        return moment_statistics(
            checked.sums[indices].sum(0), checked.squares[indices].sum(0), pixels
        )
    generator = torch.Generator().manual_seed(seed)
    sample = [indices[i] for i in torch.randperm(len(indices), generator=generator)[:2000]]
    files = check_files([Path(store.name(i)) for i in sample], channels, num_workers)
    pixels = sum(shape[1] * shape[2] for shape in files.shapes)
    return moment_statistics(files.sums.sum(0), files.squares.sum(0), pixels)


def moment_statistics(
    sums: torch.Tensor, squares: torch.Tensor, pixels: int
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0-1 scale from sums of 0-255 values and their squares."""
    mean = sums.to(torch.float64) / pixels / 255.0
    variance = squares.to(torch.float64) / pixels / 255.0**2 - mean.square()
    return mean.tolist(), variance.clamp_min(1e-12).sqrt().tolist()
