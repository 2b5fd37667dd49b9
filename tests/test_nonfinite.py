"""The training guard: a NaN loss stops training at that step and says where to resume."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from project.callbacks import LinkDataToModel, NonFiniteLossError, StopOnNonFiniteLoss
from project.data import DigitsDataModule
from project.models import ConvNet, ImageClassifier


class NaNFromCall(nn.Module):
    """A loss term that is 0 until its ``bad_call``-th call (counting from 0), then NaN."""

    def __init__(self, bad_call: int) -> None:
        super().__init__()
        self.bad_call = bad_call
        self.calls = 0

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        value = float("nan") if self.calls >= self.bad_call else 0.0
        self.calls += 1
        return logits.sum() * 0 + value


class NamedTerms(nn.Module):
    """The sum of named loss terms, each kept in ``last_terms`` as losses with terms keep them."""

    def __init__(self, **terms: nn.Module) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        values = {name: term(logits, targets) for name, term in self.terms.items()}
        self.last_terms = {name: value.detach() for name, value in values.items()}
        return sum(values.values())


def train_until_nan(bad_step: int, checkpoint_dir: Path) -> tuple[ImageClassifier, str]:
    loss = NamedTerms(ce=nn.CrossEntropyLoss(), bad=NaNFromCall(bad_step))
    model = ImageClassifier(ConvNet(10, in_channels=1, widths=[8, 16]), num_classes=10, loss=loss)
    data = DigitsDataModule(root="data/digits", batch_size=32, num_workers=0, cache=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=20,
        limit_val_batches=0,  # only training steps call the loss
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            LinkDataToModel(),
            StopOnNonFiniteLoss(),
            ModelCheckpoint(dirpath=checkpoint_dir, every_n_train_steps=2, save_top_k=-1),
        ],
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(model, datamodule=data)
    return model, str(info.value)


@pytest.mark.slow
def test_nan_loss_stops_at_that_step_naming_terms_and_last_checkpoint(workdir: Path):
    model, message = train_until_nan(bad_step=3, checkpoint_dir=workdir / "checkpoints")
    assert "training loss is nan at global step 3" in message
    assert "bad=nan" in message and "ce=" in message
    saved = sorted((workdir / "checkpoints").glob("*.ckpt"))
    assert len(saved) == 1, saved  # written after step 2; nothing after the NaN
    assert f"last good checkpoint: {saved[0]}" in message
    assert torch.load(saved[0], weights_only=False)["global_step"] == 2  # our own file
    # The guard ran before backward: the NaN never reached the weights.
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_nan_at_the_first_step_says_no_checkpoint_exists(workdir: Path):
    _, message = train_until_nan(bad_step=0, checkpoint_dir=workdir / "checkpoints")
    assert "global step 0" in message
    assert "last good checkpoint: none written yet" in message
