"""python -m project.crossval: every fold fits and tests; mean and std are saved."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import FAST

from project import crossval


@pytest.mark.slow
def test_two_folds_fit_test_and_write_the_summary(workdir: Path, capsys: pytest.CaptureFixture):
    summary = crossval.run(["--config", "configs/default.yaml", "--folds", "2", *FAST])

    output = workdir / "logs" / "crossval-default"
    for fold in (0, 1):
        # Each fold trained on its own split: the run's saved config says which.
        saved = yaml.safe_load((output / f"fold_{fold}" / "config.yaml").read_text())
        assert saved["data"]["init_args"]["num_folds"] == 2
        assert saved["data"]["init_args"]["fold"] == fold
    with (output / "folds.csv").open() as file:
        folds = list(csv.DictReader(file))
    assert [row["fold"] for row in folds] == ["0", "1"]
    accuracies = [float(row["test/acc"]) for row in folds]

    mean, spread = summary["test/acc"]
    assert mean == pytest.approx(statistics.fmean(accuracies))
    assert spread == pytest.approx(statistics.stdev(accuracies))
    with (output / "summary.csv").open() as file:
        saved_summary = {row["metric"]: row for row in csv.DictReader(file)}
    assert float(saved_summary["test/acc"]["mean"]) == pytest.approx(mean)
    printed = capsys.readouterr().out
    assert "2-fold cross-validation" in printed and "mean" in printed and "std" in printed


@pytest.mark.slow
def test_folds_without_a_logger_keep_their_files_apart(workdir: Path):
    # Without a logger, Lightning writes config.yaml to the working directory:
    # the second fold used to stop there rather than overwrite the first's.
    crossval.run(
        [
            "--config",
            "configs/experiments/digits-5to9-scratch.yaml",
            "--folds",
            "2",
            "--trainer.logger=false",
            *FAST,
        ]
    )
    output = workdir / "logs" / "crossval-digits-5to9-scratch"
    for fold in (0, 1):
        saved = yaml.safe_load((output / f"fold_{fold}" / "config.yaml").read_text())
        assert saved["data"]["init_args"]["fold"] == fold
        assert list((output / f"fold_{fold}" / "checkpoints").glob("*.ckpt"))
    assert (output / "summary.csv").is_file()
    assert not (workdir / "config.yaml").exists()


def test_fewer_than_two_folds_is_refused(workdir: Path):
    with pytest.raises(SystemExit, match="at least 2"):
        crossval.run(["--config", "configs/default.yaml", "--folds", "1"])


def test_a_second_run_gets_its_own_folder(tmp_path: Path):
    assert crossval.unused_name(tmp_path, "crossval-default") == "crossval-default"
    (tmp_path / "crossval-default").mkdir()
    (tmp_path / "crossval-default-2").mkdir()
    assert crossval.unused_name(tmp_path, "crossval-default") == "crossval-default-3"
