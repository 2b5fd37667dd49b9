"""Progress output for logs (CI, nohup, files): one plain line per epoch instead of a bar."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ProgressBar


class PlainProgress(ProgressBar):
    """Prints one line per training epoch with its metrics and duration.

    A live progress bar redraws itself in place; written to a file or a CI log
    it becomes either one endless line (tqdm) or only the final epoch (Rich).
    This writes lines such as::

        epoch 3/30  12.4 s  train/loss 0.1432  val/loss 0.0981  val/acc 0.9722 ...

    ``configs/presets/log-lines.yaml`` adds it to a run (Lightning's own bar is
    the default)::

        trainer:
          callbacks+:
            - class_path: project.callbacks.progress.PlainProgress

    Args:
        every_n_batches: Also print a line every this many training batches
            (0: only at the end of each epoch). Useful for long epochs in logs.
    """

    def __init__(self, every_n_batches: int = 0) -> None:
        super().__init__()
        if every_n_batches < 0:
            raise ValueError(f"every_n_batches must be 0 or more, got {every_n_batches}")
        self.every_n_batches = every_n_batches
        self._enabled = True
        self._epoch_started = 0.0
        self._finished: tuple[str, float] | None = None  # the epoch ended, not printed yet

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = time.monotonic()  # a run resumed mid-epoch starts no epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_finished(trainer, pl_module)
        self._epoch_started = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._enabled or not self.every_n_batches:
            return
        done = batch_idx + 1
        if done % self.every_n_batches == 0 and done < self.total_train_batches:
            metrics = self._metrics(trainer, pl_module, keep_step=True)
            self._print(f"{self._epoch(trainer)}  batch {done}/{self.total_train_batches}", metrics)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Printed once Lightning has computed the epoch's values in every process (at
        # the next epoch's start, or when training ends): read here, on rank 0 alone,
        # a value still to be reduced across processes would wait for the others.
        self._finished = (self._epoch(trainer), time.monotonic() - self._epoch_started)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print_finished(trainer, pl_module)

    def _print_finished(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._finished is None or not self._enabled:
            return
        (epoch, seconds), self._finished = self._finished, None
        self._print(f"{epoch}  {seconds:.1f} s", self._metrics(trainer, pl_module, keep_step=False))

    def _epoch(self, trainer: L.Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {trainer.current_epoch + 1}/{total}"

    def _metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule, keep_step: bool
    ) -> dict[str, Any]:
        # Lightning names the two views of an on_step+on_epoch value "<name>_step"
        # and "<name>_epoch"; one view is shown, under the name that was logged.
        shown, hidden = ("_step", "_epoch") if keep_step else ("_epoch", "_step")
        metrics = {}
        for name, value in self.get_metrics(trainer, pl_module).items():
            if name != "v_num" and not name.endswith(hidden):
                metrics[name.removesuffix(shown)] = value
        return metrics

    def _print(self, head: str, metrics: dict[str, Any]) -> None:
        parts = [head]
        # Training figures first, then validation, as they happened.
        for name, value in sorted(metrics.items(), key=lambda item: item[0].startswith("val")):
            parts.append(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}")
        # flush: under nohup stdout is block-buffered and lines would arrive late.
        print("  ".join(parts), flush=True)
