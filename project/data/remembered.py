"""Remembered file checks: a later run decodes only the files that are new or changed.

The setup check (:mod:`project.data.check`) keeps one record per set of files
in ``$XDG_CACHE_HOME/project/file-checks/`` (``~/.cache/...`` by default): per
file its path, size, modification time, and what decoding it found.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from project.callbacks.checkpointing import write_atomically
from project.data.check import FileCheck

RECORD_FORMAT = 2
# The record's tensors, one row per file.
COLUMNS = ("stats", "shapes", "sums", "squares")


def record_folder() -> Path:
    """Where checks are remembered: ``$XDG_CACHE_HOME/project/file-checks``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "project" / "file-checks"


class Record:
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
