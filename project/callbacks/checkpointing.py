"""Keeping a run's checkpoints and logs safe: interrupts, full disks, two runs started at once.

The CLI installs all of this for ``fit``; in your own ``Trainer`` add
``SaveOnInterrupt()`` to the callbacks and ``AtomicCheckpointIO()`` to the plugins.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; any earlier file at that path is unchanged."""


class RunDirectoryError(OSError):
    """A run's log or checkpoint folder cannot be created or written (raised before training)."""


# -- writing checkpoints ---------------------------------------------------------------------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint next to its destination first, then renames it into place.

    Lightning's own writer stages the file in the system temporary folder and
    moves it from there; when that folder is on another disk (often a small
    ``/tmp``) the move becomes a copy that can die half-way over the previous
    ``last.ckpt``, or fail although the checkpoint disk has room. Here the file
    is written and flushed to disk in the checkpoint's own folder and renamed
    over the old one in one step: after a full disk, a crash or a kill, the path
    holds either the old checkpoint or the new one, never a torn file. A failed
    write raises :class:`CheckpointWriteError` naming the path. Paths with a URL
    scheme (``s3://``) go through Lightning's writer unchanged.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            write_atomically(buffer.getbuffer(), target)
        except OSError as error:
            raise CheckpointWriteError(
                error.errno,
                f"could not write checkpoint {target} ({_size(buffer.getbuffer().nbytes)}, "
                f"{_free_space(target.parent)} free): {error.strerror or error}. "
                "Any earlier file at that path is unchanged; free space there or point "
                "the ModelCheckpoint's dirpath (or the logger's save_dir) at another disk",
            ) from error


def write_atomically(data: bytes | memoryview, target: Path) -> None:
    """Writes ``data`` beside ``target``, flushes it to disk and renames it over ``target``.

    After a full disk, a crash or a kill, ``target`` holds the old bytes or the
    new ones, never a torn file.

    Raises:
        OSError: The write failed; any earlier file at ``target`` is unchanged.
    """
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.partial"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError:
        # The folder itself may be what failed (a file in its place).
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Flushes a folder's entry list, so a rename survives a power cut (POSIX only)."""
    if sys.platform == "win32":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems do not sync folders; the rename itself is done
    finally:
        os.close(descriptor)


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def _free_space(folder: Path) -> str:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return "unknown space"
    return _size(shutil.disk_usage(existing).free)


# -- run folders -------------------------------------------------------------------------------


def check_writable(folder: str | Path, what: str, setting: str) -> None:
    """Creates ``folder`` and writes a small file in it, so a bad path fails before training.

    Args:
        folder: The folder the run will write into.
        what: What goes there, for the message ("checkpoints").
        setting: The config key that chooses the folder, for the message.

    Raises:
        RunDirectoryError: Naming the folder, the reason and the key to change.
    """
    path = Path(folder)
    probe = path / f".write-test-{os.getpid()}-{secrets.token_hex(2)}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise RunDirectoryError(
            f"cannot write {what} to {path}: {error.strerror or error}; "
            f"make it writable or set {setting} to another folder"
        ) from error


def claim_log_versions(loggers: Iterable[Logger]) -> None:
    """Gives each auto-versioned logger a ``version_N`` folder that no other run can take.

    TensorBoardLogger and CSVLogger pick ``version_N`` as one more than the
    highest folder they find, and create it only when they first write: two runs
    started together pick the same N and write their logs and checkpoints into
    one folder. Here the folder is created at once with ``mkdir``, which fails
    for all but one of the runs racing for it; the others take the next N.
    Loggers sharing a folder (TensorBoard and CSV side by side) share the version.

    Raises:
        RunDirectoryError: When the logger's folder cannot be created.
    """
    claimed: dict[str, int] = {}
    for logger in loggers:
        # The version is chosen lazily into this attribute; set it the same way.
        if not isinstance(logger, (TensorBoardLogger, CSVLogger)) or logger._version is not None:
            continue
        root = os.path.expanduser(os.path.expandvars(logger.root_dir))
        if "://" in root:
            continue
        if root not in claimed:
            claimed[root] = _claim_version(Path(root), logger.save_dir)
        logger._version = claimed[root]


def _claim_version(root: Path, save_dir: str | None) -> int:
    fix = (
        f"make it writable or set trainer.logger.init_args.save_dir (now {save_dir!r}) "
        "to another folder"
    )
    try:
        root.mkdir(parents=True, exist_ok=True)
        taken = [
            int(p.name.removeprefix("version_"))
            for p in root.iterdir()
            if p.name.startswith("version_") and p.name.removeprefix("version_").isdigit()
        ]
    except OSError as error:
        raise RunDirectoryError(
            f"cannot create the log folder {root}: {error.strerror or error}; {fix}"
        ) from error
    version = max(taken, default=-1) + 1
    while True:
        folder = root / f"version_{version}"
        try:
            folder.mkdir()
            return version
        except FileExistsError:
            version += 1
        except OSError as error:
            raise RunDirectoryError(
                f"cannot create the log folder {folder}: {error.strerror or error}; {fix}"
            ) from error


# -- interrupts --------------------------------------------------------------------------------


class TrainingInterrupted(SystemExit):
    """Raised after an interrupted ``fit`` saved its checkpoint; exits with 128 + the signal number.

    That is the status a shell reports for a process the signal ended (130 for
    Ctrl+C, 143 for SIGTERM), so job schedulers see that the run did not finish.
    """


class SaveOnInterrupt(Callback):
    """Ctrl+C or SIGTERM during ``fit``: finish the current batch, save a checkpoint, stop.

    Without this, Ctrl+C stops training wherever it lands (possibly half-way
    through an optimizer step) and SIGTERM (sent by ``kill``, job schedulers and
    container runtimes before they kill a job) ends the batch and exits with
    status 0; neither saves the work done since the last checkpoint.

    Here the first signal asks for a stop at the next safe point: the end of the
    current training batch, or of the epoch when the signal comes during
    validation. The run's ``last.ckpt`` is then overwritten (atomically, with the
    exact batch position, optimizer and scheduler state) and the process exits
    with status 130 (SIGINT) or 143 (SIGTERM). ``fit --ckpt_path last`` with the
    same config continues from that batch. A second signal stops at once without
    saving; the previous ``last.ckpt`` stays.

    Signals are only taken over in a single-process run: distributed ranks keep
    Lightning's own handling.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    # -- signal handlers ---------------------------------------------------------------

    def _install(self, trainer: L.Trainer) -> None:
        # After Lightning has registered its own SIGTERM handler (just before the
        # sanity check), so that this one replaces it for the run.
        if self._previous or trainer.world_size > 1:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            # Lightning may have put back the handlers from before fit already.
            if signal.getsignal(number) == self._handle:
                signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            self._restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(number)
        # os.write: a print() here could land inside another print and fail.
        os.write(
            2,
            f"\n{self.requested.name}: stopping after this batch and saving a checkpoint "
            "(send it again to stop at once, without saving)\n".encode(),
        )

    # -- safe points ---------------------------------------------------------------------

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)
        if self.requested is not None:
            self._stop(trainer, save=False)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.requested is not None:
            self._stop(trainer, save=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requested is not None:
            self._stop(trainer, save=True)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _stop(self, trainer: L.Trainer, save: bool) -> None:
        assert self.requested is not None
        name, code = self.requested.name, 128 + int(self.requested)
        self._restore()
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        where = f"epoch {trainer.current_epoch + 1}, batch {done} of {trainer.num_training_batches}"
        if not save:
            rank_zero_info(f"{name}: stopped before training began; nothing to save.")
            raise TrainingInterrupted(code)
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        rank_zero_info(
            f"{name}: stopped at {where}; saved {path}\n"
            "Resume: run the same command with --ckpt_path last"
        )
        raise TrainingInterrupted(code)

    @staticmethod
    def checkpoint_path(trainer: L.Trainer) -> Path:
        """Where the interrupted run's checkpoint goes: the ``last.ckpt`` of its checkpoints."""
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            name = callback.CHECKPOINT_NAME_LAST or "last"
            return Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"
        return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"
