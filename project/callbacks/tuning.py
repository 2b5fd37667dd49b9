"""Learning-rate and batch-size finders that hand their result to the run they tune.

Lightning's ``LearningRateFinder`` can only write a ``lr`` attribute on the
model, and neither finder rebuilds the optimizer: a OneCycleLR built for the
old batch size (or from the old ``max_lr``) keeps its old schedule. These
subclasses set the found value where :class:`~project.models.ImageClassifier`
reads it (its ``optimizer`` and ``scheduler`` from YAML) and rebuild the
optimizer and scheduler before the first training step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
from lightning.pytorch.callbacks import BatchSizeFinder, LearningRateFinder
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from project.exceptions import ProjectWarning


def run_folder(trainer: L.Trainer) -> Path:
    """The run's log folder (``logs/<name>/version_<n>``); without a logger, the root."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def set_learning_rate(pl_module: L.LightningModule, lr: float) -> None:
    """Makes ``lr`` the learning rate the module's optimizer and scheduler are built with.

    Sets the optimizer's ``lr`` and, for schedulers that take over the rate from
    a ``max_lr`` (OneCycleLR, CyclicLR), their ``max_lr`` too: otherwise the
    scheduler would overwrite the new rate on its first step.
    """
    optimizer = getattr(pl_module, "optimizer", None)
    if not callable(optimizer):
        raise TypeError(
            f"{type(pl_module).__name__} has no `optimizer` callable to give the found "
            "learning rate to; set `apply: false` on the finder and copy the printed "
            "value into your config"
        )
    pl_module.optimizer = functools.partial(optimizer, lr=lr)
    scheduler = getattr(pl_module, "scheduler", None)
    if "max_lr" in getattr(scheduler, "keywords", {}):
        pl_module.scheduler = functools.partial(scheduler, max_lr=lr)


def steepest_descent(
    lrs: Sequence[float], losses: Sequence[float], skip_begin: int = 10, skip_end: int = 1
) -> int | None:
    """Index of the rate where the loss falls fastest per decade of learning rate.

    Only the stretch before the lowest loss counts: beyond it the loss
    diverges. The slope is taken against log10 of the rate, so every decade of
    an exponential sweep weighs the same. (Lightning's own suggestion takes it
    against the rate itself, which favours the smallest rates: on the digits
    it picked the top of the curve's start-up rise, 2.5e-4, ten times below
    the configured 3e-3.) ``None`` when fewer than three usable points remain.
    """
    end = len(losses) - skip_end
    points = [i for i in range(skip_begin, end) if math.isfinite(losses[i]) and lrs[i] > 0]
    if len(points) < 3:
        return None
    lowest = min(points, key=lambda i: losses[i])
    points = [i for i in points if i <= lowest]
    if len(points) < 3:
        return None
    slopes = {
        here: (losses[after] - losses[before]) / (math.log10(lrs[after]) - math.log10(lrs[before]))
        for before, here, after in zip(points, points[1:], points[2:], strict=False)
    }
    return min(slopes, key=slopes.__getitem__)


class PlottedLearningRateFinder(LearningRateFinder):
    """Learning-rate range test before training: plots, prints and applies the suggestion.

    For ``num_training_steps`` batches the learning rate grows from ``min_lr``
    to ``max_lr`` while the loss is recorded; then the model and optimizer are
    restored. The suggestion is the rate where the loss falls fastest per
    decade of rate (:func:`steepest_descent`). It is printed, the
    loss-versus-rate curve is saved as ``lr_finder.png`` in the run's folder
    (with the suggestion marked), and (with ``apply``) training starts with it as the
    optimizer's ``lr`` and the scheduler's ``max_lr`` (OneCycleLR, CyclicLR).
    The saved ``config.yaml`` keeps the configured rate: copy the printed one
    into your config to reuse it without the search.

    YAML (``configs/presets/lr-finder.yaml``)::

        trainer:
          callbacks+:
            - class_path: project.callbacks.tuning.PlottedLearningRateFinder

    Args:
        min_lr: Rate the sweep starts at.
        max_lr: Rate the sweep ends at.
        num_training_steps: Batches in the sweep (one rate each).
        mode: ``exponential`` (even steps on a log scale) or ``linear``.
        early_stop_threshold: Stop the sweep once the loss exceeds this multiple
            of the best loss so far; ``None`` sweeps to ``max_lr``.
        apply: Train with the suggestion; ``False`` only reports it.
        filename: Name of the plot in the run folder.
    """

    def __init__(
        self,
        min_lr: float = 1e-6,
        max_lr: float = 1.0,
        num_training_steps: int = 100,
        mode: Literal["exponential", "linear"] = "exponential",
        early_stop_threshold: float | None = 4.0,
        apply: bool = True,
        filename: str = "lr_finder.png",
    ) -> None:
        super().__init__(
            min_lr=min_lr,
            max_lr=max_lr,
            num_training_steps=num_training_steps,
            mode=mode,
            early_stop_threshold=early_stop_threshold,
            update_attr=False,
        )
        self.apply = apply
        self.filename = filename
        self.suggestion: float | None = None
        self.plot_path: Path | None = None

    def lr_find(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().lr_find(trainer, pl_module)
        if self.optimal_lr is None:  # fast_dev_run skips the search
            return
        results = self.optimal_lr.results
        index = steepest_descent(results["lr"], results["loss"])
        self.suggestion = None if index is None else results["lr"][index]
        if trainer.is_global_zero:
            self.plot_path = self._save_plot(trainer)
        if self.suggestion is None:
            rank_zero_warn(
                f"the learning-rate finder found no suggestion: it recorded {len(results['lr'])} "
                f"of num_training_steps={self._num_training_steps} points (the search also "
                "ends at max_epochs and when the loss diverges) and the curve was too short "
                "or flat; raise num_training_steps or max_epochs, or widen min_lr..max_lr. "
                "Training continues with the configured rate.",
                category=ProjectWarning,
            )
            return
        if self.apply:
            set_learning_rate(pl_module, self.suggestion)
            trainer.strategy.setup_optimizers(trainer)
        action = "training with it" if self.apply else "not applied (apply: false)"
        plot = f"; plot: {self.plot_path}" if self.plot_path else ""
        rank_zero_info(f"Suggested learning rate: {self.suggestion:.3g} ({action}{plot})")

    def _save_plot(self, trainer: L.Trainer) -> Path | None:
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            rank_zero_warn(
                "matplotlib is not installed: the learning-rate plot is not saved",
                category=ProjectWarning,
            )
            return None
        path = run_folder(trainer) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        figure = self.optimal_lr.plot(suggest=False)
        if self.suggestion is not None:
            results = self.optimal_lr.results
            loss = results["loss"][results["lr"].index(self.suggestion)]
            axes = figure.axes[0]
            axes.plot(self.suggestion, loss, "o", color="red", markersize=10)
            axes.set_title(f"suggested learning rate {self.suggestion:.3g}")
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        return path


class ScheduledBatchSizeFinder(BatchSizeFinder):
    """Finds the largest batch size that fits in memory, then rebuilds the optimizer.

    Lightning's batch-size finder grows ``data.batch_size`` (doubling in
    ``power`` mode) for a few steps each until memory runs out or the batch
    holds the whole training split, and keeps the largest that worked. The
    optimizer and scheduler were built for the old batch size; a OneCycleLR
    would keep the old number of steps and never finish its cycle. This
    subclass rebuilds both from the new size and prints it. It searches before
    training only: validation and test use the size it found.

    A larger batch usually wants a larger learning rate (roughly in proportion
    for SGD); the finder does not change it. On a CPU there is no memory limit
    to find: the search stops at the size of the training split.

    YAML (``configs/presets/batch-size-finder.yaml``)::

        trainer:
          callbacks+:
            - class_path: project.callbacks.tuning.ScheduledBatchSizeFinder

    Args:
        mode: ``power`` (double until failure) or ``binsearch`` (then bisect).
        steps_per_trial: Training steps tried at each size.
        init_val: First size tried.
        max_trials: Most sizes tried.
        batch_arg_name: Attribute that holds the batch size (on the data module).
        margin: Share taken off the size found, as headroom (binsearch only).
        max_val: Largest size tried.
    """

    def __init__(
        self,
        mode: Literal["power", "binsearch"] = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        super().__init__(
            mode=mode,
            steps_per_trial=steps_per_trial,
            init_val=init_val,
            max_trials=max_trials,
            batch_arg_name=batch_arg_name,
            margin=margin,
            max_val=max_val,
        )

    def scale_batch_size(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's finder also searches again before validate, test and
        # predict (the test after fit included); here evaluation keeps the
        # training batch size.
        if trainer.state.fn != "fit":
            return
        # The trial steps would advance the schedule (and overrun a OneCycleLR
        # built for a short run); the search runs without one.
        schedules = trainer.strategy.lr_scheduler_configs
        trainer.strategy.lr_scheduler_configs = []
        super().scale_batch_size(trainer, pl_module)
        if self.optimal_batch_size is None:  # fast_dev_run skips the search
            trainer.strategy.lr_scheduler_configs = schedules
            return
        trainer.strategy.setup_optimizers(trainer)
        rank_zero_info(
            f"Batch size found: {self.optimal_batch_size} per device; optimizer and "
            f"schedule rebuilt for {trainer.num_training_batches} batches per epoch"
        )
