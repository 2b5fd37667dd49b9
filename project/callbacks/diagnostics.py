"""Looking inside training: gradient norms per layer, weight and gradient histograms, and a
check that names the first layer whose gradient is NaN or infinite."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import grad_norm
from torch.optim import Optimizer

from project.callbacks.nonfinite import format_value, last_checkpoint


class NonFiniteGradientError(FloatingPointError):
    """A gradient became NaN or infinite before the optimizer step."""


class GradientDiagnostics(Callback):
    """What the gradients do, logged where the optimizer is about to use them.

    Lightning calls ``on_before_optimizer_step`` once per optimizer step, after
    gradient accumulation and after mixed precision has unscaled the gradients
    (so the figures are the true ones), before clipping.

    - Each parameter's gradient norm (``grad_<p>_norm/<name>``, Lightning's
      ``grad_norm``) and their total (``grad_<p>_norm_total``), logged as scalars
      at the trainer's ``log_every_n_steps``.
    - Every ``histogram_every_n_steps`` steps (0: never): histograms of each
      weight and each gradient under ``weights/`` and ``gradients/`` in
      TensorBoard (other loggers have no histograms; they are skipped).
    - Every step, when ``check_finite``: stops with :class:`NonFiniteGradientError`
      naming the first parameter (in the model's order) whose gradient holds a
      NaN or an infinity, the step, and the last checkpoint. The loss can be
      finite while a gradient is not (an overflow in backward, a ``sqrt`` at 0);
      the step is not taken, so the weights stay as they were.

    Args:
        norm_type: The norm (2: Euclidean; ``inf``: the largest absolute value).
        histogram_every_n_steps: How often histograms are written (0: never).
        check_finite: Check every gradient at every step (one device sync per step).
    """

    def __init__(
        self, norm_type: float = 2.0, histogram_every_n_steps: int = 0, check_finite: bool = True
    ) -> None:
        if histogram_every_n_steps < 0:
            raise ValueError(
                f"histogram_every_n_steps must be 0 (never) or more, got {histogram_every_n_steps}"
            )
        self.norm_type = norm_type
        self.histogram_every_n_steps = histogram_every_n_steps
        self.check_finite = check_finite

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer
    ) -> None:
        step = trainer.global_step
        if self.check_finite:
            self._check_finite(trainer, pl_module)
        # Logged every step; Lightning writes them every log_every_n_steps.
        pl_module.log_dict(grad_norm(pl_module, norm_type=self.norm_type))
        every = self.histogram_every_n_steps
        if every and step % every == 0 and trainer.is_global_zero:
            self._histograms(trainer, pl_module, step)

    def _check_finite(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return
        # One sync for all of them; the search for the first bad one only when there is one.
        finite = torch.stack([grad.isfinite().all() for _, grad in named])
        bad = not bool(finite.all())
        # Every process must stop together, or the others wait forever in DDP.
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        first = next(
            ((n, g) for (n, g), ok in zip(named, finite.tolist(), strict=True) if not ok), None
        )
        where = (
            f"the gradient of {first[0]} holds {nonfinite_kinds(first[1])}"
            if first
            else "a gradient in another process is not finite"
        )
        checkpoint = last_checkpoint(trainer)
        raise NonFiniteGradientError(
            f"{where} at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            "training stopped before this step changed the weights; last good checkpoint: "
            f"{checkpoint or 'none written yet'}; usual causes: fp16 overflow (try bf16-mixed), "
            "a learning rate too high (or gradient_clip_val), sqrt/log/division at zero in "
            "the loss or the network"
        )

    def _histograms(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            for name, parameter in pl_module.named_parameters():
                logger.experiment.add_histogram(f"weights/{name}", parameter.detach(), step)
                if parameter.grad is not None:
                    logger.experiment.add_histogram(f"gradients/{name}", parameter.grad, step)


def nonfinite_kinds(tensor: torch.Tensor) -> str:
    """What is wrong in ``tensor``: how many NaN and infinite values, of how many."""
    nans, infs = int(tensor.isnan().sum()), int(tensor.isinf().sum())
    parts = [f"{nans} NaN" if nans else "", f"{infs} infinite" if infs else ""]
    shown = " and ".join(part for part in parts if part)
    return f"{shown} of {tensor.numel()} values (largest finite {_largest(tensor)})"


def _largest(tensor: torch.Tensor) -> Any:
    finite = tensor[tensor.isfinite()]
    return format_value(finite.abs().max()) if finite.numel() else "none"
