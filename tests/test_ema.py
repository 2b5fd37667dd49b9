"""EMA of the weights (a leaf): configs/presets/ema.yaml validates and tests the average."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST, preset, run_cli


@pytest.mark.slow
def test_ema_preset_validates_checkpoints_and_tests_the_averaged_weights(workdir: Path):
    cli = run_cli(
        "fit",
        *preset("ema"),
        "--trainer.callbacks.init_args.update_starting_at_step=0",
        *FAST,
        "--trainer.max_epochs=2",
    )
    best = cli.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = next(k for k, v in averaged.items() if k.startswith("net.") and v.ndim == 4)  # a conv
    assert not torch.equal(averaged[name], raw[name])
    # The test after fit ran on the weights that were validated: the average.
    assert torch.equal(cli.model.state_dict()[name], averaged[name])


@pytest.mark.slow
def test_before_the_average_starts_the_run_keeps_and_validates_its_training_weights(
    workdir: Path,
):
    never = "--trainer.callbacks.init_args.update_starting_at_step=1000000"
    seeded = [*FAST, "--trainer.max_epochs=2", "--seed_everything=3", "--test_after_fit=false"]
    plain = run_cli("fit", "--config", "configs/default.yaml", *seeded)
    waiting = run_cli("fit", *preset("ema"), never, *seeded)
    for name, value in plain.model.state_dict().items():
        assert torch.equal(waiting.model.state_dict()[name], value), name
    assert (
        waiting.trainer.callback_metrics["val/loss"] == plain.trainer.callback_metrics["val/loss"]
    )
    last = torch.load(waiting.trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert "current_model_state" not in last
    assert torch.equal(last["state_dict"][name], plain.model.state_dict()[name])
