"""The learning-rate and batch-size finders (a leaf), from their presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import FAST, find_callback, preset, run_cli

from project.callbacks.tuning import (
    PlottedLearningRateFinder,
    ScheduledBatchSizeFinder,
    steepest_descent,
)


@pytest.mark.slow
def test_lr_finder_saves_its_plot_and_trains_with_its_suggestion(workdir: Path):
    cli = run_cli(
        "fit",
        *preset("lr-finder"),
        # A short sweep over the decades where this model's loss falls.
        "--trainer.callbacks.init_args.min_lr=1e-4",
        "--trainer.callbacks.init_args.num_training_steps=30",
        "--data.init_args.batch_size=32",  # 40 batches: the sweep fits in one epoch
        *FAST,
        "--trainer.limit_train_batches=30",
        "--test_after_fit=false",
    )
    finder = find_callback(cli, PlottedLearningRateFinder)
    assert finder.suggestion is not None
    assert finder.plot_path == Path(cli.trainer.log_dir) / "lr_finder.png"
    assert finder.plot_path.stat().st_size > 1000
    # OneCycleLR takes its rate from max_lr: that is where the suggestion must go.
    optimizer = cli.trainer.optimizers[0]
    assert optimizer.param_groups[0]["max_lr"] == pytest.approx(finder.suggestion)
    assert cli.model.optimizer.keywords["lr"] == pytest.approx(finder.suggestion)


def test_lr_suggestion_is_the_steepest_fall_per_decade_before_the_minimum():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # Flat at 2.3, falling fastest around 1e-2, lowest at 1e-1, then diverging
    # (more steeply than it ever fell).
    losses = [
        2.3 - 1.8 / (1 + math.exp(-4 * (math.log10(lr) + 2))) if lr <= 0.1 else 0.6 + 20 * lr
        for lr in lrs
    ]
    index = steepest_descent(lrs, losses)
    assert 0.006 < lrs[index] < 0.016
    assert steepest_descent(lrs, sorted(losses)) is None  # a loss that only rises


@pytest.mark.slow
def test_batch_size_finder_rebuilds_the_schedule_for_the_new_size(workdir: Path):
    cli = run_cli(
        "fit",
        *preset("batch-size-finder"),
        *FAST,
        "--trainer.limit_train_batches=1.0",
        "--test_after_fit=false",
    )
    finder = find_callback(cli, ScheduledBatchSizeFinder)
    # On a CPU nothing runs out of memory: the search stops at the training split.
    assert cli.datamodule.batch_size == finder.optimal_batch_size > 256
    schedule = cli.trainer.lr_scheduler_configs[0].scheduler
    assert schedule.total_steps == cli.trainer.num_training_batches < 5
