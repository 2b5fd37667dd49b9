"""Keeping a run's checkpoints and logs safe: interrupts, full disks, two runs started at once.

Outside the CLI, add ``SaveOnInterrupt()`` to your Trainer's callbacks and
``AtomicCheckpointIO()`` to its plugins.
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

from project.exceptions import InputError


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; any earlier file at that path is unchanged."""


class RunDirectoryError(InputError, OSError):
    """A run's log or checkpoint folder cannot be created or written (raised before training)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its destination, then renames it into place.

    Lightning's writer stages the file in the system temporary folder; when that
    is another disk, the move becomes a copy that can die half-way over the old
    ``last.ckpt``. Here the path holds the old checkpoint or the new one, never a
    torn file. URLs (``s3://``) go through Lightning's writer.
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
            existing = next(p for p in (target.parent, *target.parents) if p.exists())
            size, free = buffer.getbuffer().nbytes, shutil.disk_usage(existing).free
            raise CheckpointWriteError(
                error.errno,
                f"could not write checkpoint {target} ({size / 2**20:.1f} MB, "
                f"{free / 2**20:.1f} MB free): {error.strerror or error}. "
                "Any earlier file at that path is unchanged; free space there or point "
                "the ModelCheckpoint's dirpath (or the logger's save_dir) at another disk",
            ) from error


def write_atomically(data: bytes | memoryview, target: Path) -> None:
    """Writes ``data`` beside ``target``, flushes it to disk and renames it over ``target``.

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
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    # The folder's entry list too, so the rename survives a power cut; not every
    # file system syncs folders, and the rename itself is done.
    if sys.platform != "win32":
        with contextlib.suppress(OSError):
            descriptor = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def check_writable(folder: str | Path, what: str, setting: str) -> None:
    """Creates ``folder`` and writes a small file in it, so a bad path fails before training.

    ``what`` (``"checkpoints"``) and ``setting`` (the config key) are for the message.

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


def check_run_folders(trainer: L.Trainer) -> None:
    """Fails now, not after the first epoch, when a run's logs or checkpoints cannot be written."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            check_writable(callback.dirpath, "checkpoints", "the ModelCheckpoint's dirpath")
    if trainer.logger is None:
        check_writable(trainer.default_root_dir, "checkpoints", "trainer.default_root_dir")
    elif trainer.logger.log_dir is not None:
        check_writable(trainer.logger.log_dir, "logs", "trainer.logger.init_args.save_dir")


def claim_log_versions(loggers: Iterable[Logger]) -> None:
    """Gives each auto-versioned logger a ``version_N`` folder that no other run can take.

    TensorBoardLogger and CSVLogger create ``version_N`` only when they first
    write, so two runs started together pick the same N. Here ``mkdir`` claims it
    at once (it fails for all but one racer; the others take the next N).
    Loggers sharing a folder share the version.

    Raises:
        RunDirectoryError: When the logger's folder cannot be created.
    """
    claimed: dict[str, int] = {}
    for logger in loggers:
        # Lightning chooses the version lazily into ``_version``; set it the same way.
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
    folder = root
    try:
        root.mkdir(parents=True, exist_ok=True)
        taken = [p.name[len("version_") :] for p in root.glob("version_*")]
        version = max((int(n) for n in taken if n.isdigit()), default=-1) + 1
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


class TrainingInterrupted(SystemExit):
    """Raised after an interrupted ``fit`` saved its checkpoint; exits with 128 + the signal number.

    As a shell reports a process the signal ended (130 for Ctrl+C, 143 for
    SIGTERM), so job schedulers see that the run did not finish.
    """


class SaveOnInterrupt(Callback):
    """Ctrl+C or SIGTERM during ``fit``: finish the current batch, save a checkpoint, stop.

    The first signal stops at the end of the current training batch (of the
    epoch, during validation), overwrites the run's ``last.ckpt`` with the exact
    batch position, and exits with 130 (SIGINT) or 143 (SIGTERM); ``fit
    --ckpt_path last`` continues from that batch. A second signal stops at once
    without saving. Distributed ranks keep Lightning's own signal handling.

    A mistake in the input found once training has begun (an
    :class:`~project.exceptions.InputError`, such as a file that no longer
    decodes) saves ``last.ckpt`` the same way before the error is reported, so
    the training done so far is kept.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _install(self, trainer: L.Trainer) -> None:
        # Called after Lightning registers its SIGTERM handler, so this one replaces it.
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
        if isinstance(exception, InputError) and trainer.training and trainer.global_step > 0:
            path = self.checkpoint_path(trainer)
            trainer.save_checkpoint(path, weights_only=False)
            rank_zero_info(
                f"Stopped by a mistake in the input at epoch {trainer.current_epoch + 1}, "
                f"step {trainer.global_step}; saved {path}. Fix it, then resume with "
                "--ckpt_path last"
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _stop(self, trainer: L.Trainer, save: bool) -> None:
        assert self.requested is not None
        name, code = self.requested.name, 128 + int(self.requested)
        self._restore()
        if not save:
            rank_zero_info(f"{name}: stopped before training began; nothing to save.")
            raise TrainingInterrupted(code)
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        rank_zero_info(
            f"{name}: stopped at epoch {trainer.current_epoch + 1}, batch {done} of "
            f"{trainer.num_training_batches}; saved {path}\n"
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
