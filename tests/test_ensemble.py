"""Ensembles (``configs/presets/ensemble.yaml``): several checkpoints tested as one model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST, preset, run_cli

from project.models import ImageClassifier
from project.models.ensemble import Ensemble

SHORT = [arg for arg in FAST if "max_epochs" not in arg] + ["--trainer.max_epochs=2"]


@pytest.fixture
def two_folds(workdir: Path) -> list[Path]:
    """Two models of the default config, trained from different seeds on the same split."""
    folds = []
    for fold in (0, 1):
        cli = run_cli(
            "fit",
            *preset("ensemble")[:2],
            *SHORT,
            f"--seed_everything={fold}",
            "--test_after_fit=false",
            # Where python -m project.runner folds puts them.
            "--trainer.logger.init_args.name=folds-default",
            f"--trainer.logger.init_args.version=default-fold{fold}",
        )
        folds.append(Path(cli.trainer.checkpoint_callback.last_model_path).resolve())
    return folds


@pytest.mark.slow
def test_the_ensemble_predicts_the_mean_of_its_members_probabilities(
    workdir: Path, two_folds: list[Path]
):
    tested = run_cli("test", *preset("ensemble"), *FAST)
    ensemble = tested.model.net
    assert isinstance(ensemble, Ensemble)
    assert sorted(Path(p).resolve() for p in ensemble.member_paths) == sorted(two_folds)

    members = [ImageClassifier.load_from_checkpoint(path) for path in two_folds]
    images = torch.stack([tested.datamodule.datasets["test"][i][0] for i in range(8)])
    tested.model.eval()
    with torch.no_grad():
        mean = torch.stack([m.eval()(images).softmax(dim=1) for m in members]).mean(dim=0)
        torch.testing.assert_close(tested.model(images).softmax(dim=1), mean)

    predicted = run_cli("predict", *preset("ensemble"), *FAST)
    with (Path(predicted.trainer.log_dir) / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 64  # two batches of the test split


@pytest.mark.slow
def test_checkpoints_that_are_missing_or_of_other_classes_are_named_in_one_line(
    workdir: Path, two_folds: list[Path], capsys: pytest.CaptureFixture
):
    nowhere = "--model.init_args.net.init_args.checkpoints=[logs/nowhere/*]"
    five = '--data.init_args.classes=["0","1","2","3","4"]'
    for wrong, message in [
        (nowhere, "net.init_args.checkpoints: nothing matches 'logs/nowhere/*'"),
        (five, "default-fold0/checkpoints/last.ckpt was trained on 10 classes"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            run_cli("test", *preset("ensemble"), *FAST, wrong)
        assert stopped.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], errors
