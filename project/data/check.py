"""The setup-time check: every file decoded once, in parallel, and remembered until it changes.

A corrupt image is reported when the run starts, not mid-epoch, and the check
yields the shapes and pixel sums the normalization statistics need. Results are
kept per file (path, size, modification time) in
``$XDG_CACHE_HOME/project/file-checks/`` (``~/.cache/...`` by default), so the
next run decodes only what is new or changed.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from project.callbacks.checkpointing import write_atomically
from project.data.files import UnreadableImageError, load_image

# Seconds between progress lines while a check runs.
PROGRESS_EVERY = 5.0
# Below this many files the check runs in this process: workers cost more to start.
PARALLEL_FROM = 256
RECORD_FORMAT = 2
# The record's tensors, one row per file.
COLUMNS = ("stats", "shapes", "sums", "squares")


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
    record = _Record(paths, channels)
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


def record_folder() -> Path:
    """Where checks are remembered: ``$XDG_CACHE_HOME/project/file-checks``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "project" / "file-checks"


class _Record:
    """The remembered check of one set of files: one row per file, matched on path, size, mtime."""

    def __init__(self, paths: Sequence[Path], channels: int) -> None:
        self.given = [str(p) for p in paths]
        self.paths = [os.path.abspath(p) for p in paths]
        self.channels = channels
        self.stats = torch.tensor([_stat(p) for p in self.paths], dtype=torch.int64).reshape(-1, 2)
        count = len(self.paths)
        self.shapes = torch.zeros(count, 3, dtype=torch.int64)
        self.sums = torch.zeros(count, channels, dtype=torch.int64)
        self.squares = torch.zeros(count, channels, dtype=torch.int64)
        # The common folder of all paths is that of the first and last in sort order.
        common = os.path.commonpath([min(self.paths), max(self.paths)]) if self.paths else ""
        key = hashlib.sha1(f"{common}\0{channels}".encode()).hexdigest()[:20]
        self.path = record_folder() / f"{key}.pt"
        try:
            self._load()
        except Exception:  # none yet, or damaged (any unpickling error): check everything
            self.known = torch.zeros(count, dtype=torch.bool)
            self.reasons: dict[int, str] = {}
            # Saved rows of files not in this set; kept when the record is written.
            self.others = {key: getattr(self, key)[:0] for key in COLUMNS}
            self.others |= {"paths": [], "reasons": {}}

    def _load(self) -> None:
        """Takes the saved rows of the files whose size and modification time are unchanged."""
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved["format"] != RECORD_FORMAT:
            raise ValueError(f"record format {saved['format']}")
        saved_paths = saved["paths"].split("\0")
        rows = {path: row for row, path in enumerate(saved_paths)}
        found = torch.tensor([rows.get(path, -1) for path in self.paths], dtype=torch.int64)
        # Rows of other files under the same folder (another class subset, a sample)
        # stay in the record, so checking these files does not forget those.
        current = set(self.paths)
        others = [row for row, path in enumerate(saved_paths) if path not in current]
        self.others = {key: saved[key][others] for key in COLUMNS}
        self.others["paths"] = [saved_paths[row] for row in others]
        self.others["reasons"] = {
            at: saved["reasons"][row] for at, row in enumerate(others) if row in saved["reasons"]
        }
        present = found >= 0
        same = torch.zeros_like(present)
        same[present] = (saved["stats"][found[present]] == self.stats[present]).all(dim=1)
        used = found[same]
        self.shapes[same] = saved["shapes"][used]
        self.sums[same] = saved["sums"][used]
        self.squares[same] = saved["squares"][used]
        positions = torch.nonzero(same).flatten().tolist()
        self.reasons = {
            index: saved["reasons"][row]
            for index, row in zip(positions, used.tolist(), strict=True)
            if row in saved["reasons"]
        }
        self.known = same

    def unchecked(self) -> list[int]:
        return torch.nonzero(~self.known).flatten().tolist()

    def update(self, positions: list[int], fresh: FileCheck, checked: list[str]) -> None:
        """Takes in the check of the files at ``positions`` (``checked``: their paths as given)."""
        reasons = dict(fresh.unreadable)
        if fresh.readable:
            rows = torch.tensor([positions[local] for local in fresh.readable])
            self.shapes[rows] = torch.tensor(fresh.shapes, dtype=torch.int64)
            self.sums[rows] = fresh.sums
            self.squares[rows] = fresh.squares
        for local, index in enumerate(positions):
            self.known[index] = True
            if checked[local] in reasons:
                self.reasons[index] = reasons[checked[local]]

    def result(self) -> FileCheck:
        readable = [i for i in range(len(self.paths)) if i not in self.reasons]
        return FileCheck(
            readable=readable,
            unreadable=[(self.given[i], self.reasons[i]) for i in sorted(self.reasons)],
            shapes=[tuple(shape) for shape in self.shapes[readable].tolist()],
            sums=self.sums[readable],
            squares=self.squares[readable],
            images=None,
        )

    def save(self) -> None:
        """Writes the record in one step (a crash leaves the old one or the new one)."""
        others = self.others
        count = len(self.paths)
        saved = {
            "format": RECORD_FORMAT,
            "channels": self.channels,
            # One string: unpickling 70,000 separate ones with weights_only takes a second.
            "paths": "\0".join([*self.paths, *others["paths"]]),
            **{key: torch.cat([getattr(self, key), others[key]]) for key in COLUMNS},
            "reasons": {**self.reasons, **{count + at: r for at, r in others["reasons"].items()}},
        }
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        try:
            write_atomically(buffer.getbuffer(), self.path)
        except OSError as error:
            rank_zero_info(f"File check not remembered ({self.path}: {error.strerror or error})")


def _stat(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (-1, -1)  # gone: never matches, so the check reports it
    return (info.st_size, info.st_mtime_ns)
