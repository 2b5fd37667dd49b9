"""SLURM pre-emption: checkpoint at a batch boundary, requeue the job, resume where it stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from types import FrameType
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from project.callbacks.checkpointing import TrainingInterrupted


class SlurmRequeue(Callback):
    """On SLURM's warning signal, saves a checkpoint, runs ``scontrol requeue`` and stops.

    ``#SBATCH --signal=USR1@90`` has SLURM send SIGUSR1 to every task 90 s before
    the time limit or a pre-emption. Every process finishes its current training
    batch, the processes agree on that batch (one of them may have got the signal a
    step later), and the checkpoint is written where Lightning looks for it when the
    requeued job starts again: ``hpc_ckpt_N.ckpt`` in ``trainer.default_root_dir``.
    Lightning's SLURMEnvironment resumes from the newest one with no ``--ckpt_path``,
    and the project's resumable sampler continues each process's share of the epoch
    at the next batch, so the requeued run ends where an uninterrupted one ends.

    Lightning's own requeue handler saves whenever the signal lands, mid-step; this
    one replaces it for ``signal`` while training runs. ``scripts/slurm.sbatch``
    with ``configs/presets/slurm.yaml`` uses it.

    Args:
        signal_name: The signal ``--signal`` names in the sbatch script.
    """

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        if signal_name not in signal.Signals.__members__:
            raise ValueError(f"signal_name: {signal_name!r} is not a signal name (SIGUSR1, ...)")
        self.signal = signal.Signals[signal_name]
        self.requested = False
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signal, self._handle)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.requested = True
        os.write(2, f"\n{self.signal.name}: checkpointing after this batch to requeue\n".encode())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        # One process may get the signal a batch after another: they stop together.
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            self._requeue(trainer)

    def _requeue(self, trainer: L.Trainer) -> None:
        # The file name and folder Lightning's SLURM resume looks for (its own handler's).
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            job = os.environ.get("SLURM_JOB_ID", "")
            if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
                job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
            if not re.fullmatch(r"[0-9_]+", job):
                rank_zero_warn(f"saved {path}; no SLURM job id to requeue ({job!r})")
            else:
                done = subprocess.run(["scontrol", "requeue", job], check=False)
                rank_zero_info(
                    f"{self.signal.name}: saved {path} at epoch {trainer.current_epoch + 1}, "
                    f"step {trainer.global_step}; scontrol requeue {job} "
                    f"{'done' if done.returncode == 0 else f'failed ({done.returncode})'}"
                )
        self.teardown(trainer, trainer.lightning_module, "fit")
        raise TrainingInterrupted(0)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(self.signal, self._previous)
            self._previous = None
