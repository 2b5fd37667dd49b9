"""Looking inside training (``configs/presets/diagnostics.yaml``): gradient norms per layer,
weight and gradient histograms, and the first layer whose gradient is not finite."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import FAST, preset, run_cli
from lightning.pytorch.demos.boring_classes import BoringModel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from project.callbacks.diagnostics import GradientDiagnostics, NonFiniteGradientError


@pytest.mark.slow
def test_the_preset_logs_gradient_norms_per_layer_and_histograms(workdir: Path):
    every = ["--trainer.log_every_n_steps=1", "--trainer.callbacks.histogram_every_n_steps=2"]
    cli = run_cli("fit", *preset("diagnostics"), *FAST, *every)
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"histograms": 0})
    events.Reload()
    scalars, histograms = set(events.Tags()["scalars"]), set(events.Tags()["histograms"])
    layers = [name for name, _ in cli.model.named_parameters()]
    assert "grad_2.0_norm_total" in scalars
    assert {f"grad_2.0_norm/{name}" for name in layers} <= scalars, "every layer's norm"
    assert len(events.Scalars("grad_2.0_norm_total")) == 2, "one per step, two steps"
    assert {f"weights/{name}" for name in layers} <= histograms
    assert {f"gradients/{name}" for name in layers} <= histograms
    total = events.Scalars("grad_2.0_norm_total")[0].value
    assert math.isfinite(total) and total > 0


class PoisonedGradient(BoringModel):
    """The loss stays finite; one parameter's gradient turns NaN in backward."""

    def __init__(self) -> None:
        super().__init__()
        self.layer.bias.register_hook(lambda grad: grad * float("nan"))


@pytest.mark.slow
def test_a_nonfinite_gradient_stops_naming_its_layer_before_the_step(tmp_path: Path):
    model = PoisonedGradient()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[GradientDiagnostics()],
    )
    with pytest.raises(NonFiniteGradientError) as error:
        trainer.fit(model)
    message = str(error.value)
    assert message.startswith("the gradient of layer.bias holds 2 NaN of 2 values")
    assert "global step 0" in message and "\n" not in message
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter.detach(), before[name]), f"{name} changed"


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match=r"histogram_every_n_steps must be 0 \(never\) or more"):
        GradientDiagnostics(histogram_every_n_steps=-1)
