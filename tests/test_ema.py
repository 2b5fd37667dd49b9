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
