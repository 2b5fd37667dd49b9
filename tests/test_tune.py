"""python -m project.tune: trials from the YAML search space, pruning, a best config that runs."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import FAST, run_cli

from project import tune

# Trials as short as the fast config runs, and quiet.
TRIAL = [arg for arg in FAST if "max_epochs" not in arg] + ["--trainer.max_epochs=2"]


@pytest.mark.slow
def test_three_trials_write_a_best_config_that_runs(workdir: Path, capsys: pytest.CaptureFixture):
    study = tune.run(["--config", "configs/default.yaml", "--trials", "3", *TRIAL])

    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # A fresh model per trial, each in its own log folder.
    output = workdir / "logs" / "tune-default"
    assert sorted(p.name for p in output.glob("trial_*")) == ["trial_000", "trial_001", "trial_002"]
    with (output / "trials.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    assert float(rows[study.best_trial.number]["val/loss"]) == pytest.approx(study.best_value)
    assert "best.yaml" in capsys.readouterr().out

    best = output / "best.yaml"
    config = yaml.safe_load(best.read_text())
    max_lr = study.best_params["model.init_args.scheduler.init_args.max_lr"]
    assert config["model"]["init_args"]["scheduler"]["init_args"]["max_lr"] == max_lr
    cli = run_cli("fit", "--config", str(best), *FAST)
    assert cli.trainer.state.finished
    assert cli.model.scheduler.keywords["max_lr"] == pytest.approx(max_lr)
    assert cli.model.net.dropout.p == study.best_params["model.init_args.net.init_args.dropout"]


@pytest.mark.slow
def test_trials_without_a_logger_keep_their_files_apart(workdir: Path):
    # Without a logger, Lightning writes config.yaml to the working directory:
    # the second trial used to stop there rather than overwrite the first's.
    study = tune.run(
        [
            "--config",
            "configs/experiments/digits-5to9-scratch.yaml",
            "--trials",
            "2",
            "--trainer.logger=false",
            *TRIAL,
        ]
    )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    output = workdir / "logs" / "tune-digits-5to9-scratch"
    for trial in study.trials:
        folder = output / f"trial_{trial.number:03d}"
        assert Path(trial.user_attrs["log_dir"]).resolve() == folder.resolve()
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["trainer"]["logger"] is False
        assert list((folder / "checkpoints").glob("*.ckpt"))
    assert not (workdir / "config.yaml").exists()
    # The best config is the user's, not the trial's folder.
    best = yaml.safe_load((output / "best.yaml").read_text())
    assert best["trainer"]["default_root_dir"] is None


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.mark.slow
def test_a_pruned_trial_stops_after_its_first_validation(workdir: Path):
    space = tune.load_search_space("configs/search/default.yaml")
    search = tune.Study(
        ["configs/default.yaml"],
        space,
        "pruned",
        workdir / "logs" / "pruned",
        extra_args=[*TRIAL[:-1], "--trainer.max_epochs=3"],
    )
    search.check()
    study = optuna.create_study(pruner=AlwaysPrune())
    study.optimize(search.objective, n_trials=1)

    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    # Two training batches per epoch: stopped after the first of three epochs.
    assert list(trial.intermediate_values) == [2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parameters: {a.b: {low: 1, high: 0}}", "parameters.a.b: low (1) must be below high"),
        ("parameters: {a.b: {low: 0, high: 1, log: true}}", "log: true needs low > 0"),
        ("parameters: {a.b: {choices: [1], low: 0}}", "choices must be a non-empty list"),
        ("parameters: {a.b: {lo: 1, high: 2}}", "unknown fields ['lo']"),
        ("direction: up\nparameters: {a.b: {choices: [1]}}", "direction must be minimize"),
        ("metric: val/acc", "`parameters` is empty"),
    ],
)
def test_search_file_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"space\.yaml") as error:
        tune.load_search_space(path)
    assert message in str(error.value)


def test_choices_can_be_lists(tmp_path: Path):
    path = tmp_path / "space.yaml"
    path.write_text("parameters: {net.widths: {choices: [[8, 16], [16, 32]]}}")
    space = tune.load_search_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    value = space.parameters[0].suggest(trial)
    assert value in ([8, 16], [16, 32])
    assert tune.override_args({"net.widths": value}) == [f"--net.widths={value}"]
