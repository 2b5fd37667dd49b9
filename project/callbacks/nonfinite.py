"""Stops training at the first NaN or infinite loss, before it reaches the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(Callback):
    """Raises :class:`NonFiniteLossError` when a training loss is NaN or infinite.

    The check runs before the backward pass, so the bad step never updates the
    weights. The message names the step, the loss's named terms
    (``loss.last_terms``) and the last checkpoint written, to resume from. It
    costs one device sync per step; ``EarlyStopping(check_finite=True)`` looks
    only once per validation.
    """

    def __init__(self) -> None:
        self.batch_idx = 0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch_idx = batch_idx

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        # Every process must stop together, or the others wait forever in DDP.
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise NonFiniteLossError(self.message(trainer, pl_module, loss))

    def message(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> str:
        lines = [
            f"training loss is {format_value(loss)} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {self.batch_idx}); training stopped "
            "before this step changed the weights",
        ]
        terms = getattr(getattr(pl_module, "loss", None), "last_terms", None)
        if terms:
            shown = ", ".join(f"{name}={format_value(term)}" for name, term in terms.items())
            lines.append(f"  loss terms: {shown}")
        checkpoint = last_checkpoint(trainer)
        resume = f"{checkpoint} (resume with --ckpt_path {checkpoint})" if checkpoint else None
        lines.append(f"  last good checkpoint: {resume or 'none written yet'}")
        lines.append(
            "  usual causes: a learning rate too high (try a lower lr or gradient_clip_val), "
            "fp16 overflow (try bf16-mixed), a bad input, or log/division by zero in a custom loss"
        )
        return "\n".join(lines)


def format_value(value: Tensor) -> str:
    value = value.detach().float()
    return f"{value.item():.6g}" if value.numel() == 1 else str(value.tolist())


def last_checkpoint(trainer: L.Trainer) -> Path | None:
    """The most recently written checkpoint file of the trainer's ModelCheckpoints, if any."""
    written = [
        Path(path)
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path, *callback.best_k_models)
        if path and Path(path).is_file()
    ]
    return max(written, key=lambda path: path.stat().st_mtime, default=None)
