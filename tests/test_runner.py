"""python -m project.runner: seeds, folds and Optuna trials; one table, one CSV, a best config."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import FAST, run_cli

from project import runner
from project.cli import main
from project.search import load_search_space, make_sampler, override_args, search

# Trials as short as the fast config runs: two epochs, so that a pruned one stops early.
TRIAL = [arg for arg in FAST if "max_epochs" not in arg] + ["--trainer.max_epochs=2"]
# Stacked on the default config: no logger, and no callback that needs one.
NO_LOGGER = """
trainer:
  logger: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/loss, save_last: true}
"""


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def logged_scalar(log_dir: str, tag: str) -> float:
    """The last value of ``tag`` in a run's TensorBoard events: what the run itself wrote."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir)
    events.Reload()
    return events.Scalars(tag)[-1].value


@pytest.mark.slow
def test_seeds_table_is_the_mean_and_std_of_the_runs(workdir: Path, capsys: pytest.CaptureFixture):
    runs = runner.run(["seeds", "--config", "configs/default.yaml", "--seeds", "0", "1", *FAST])

    output = workdir / "logs" / "seeds-default"
    assert [run.name for run in runs] == ["default-seed0", "default-seed1"]
    for run, seed in zip(runs, (0, 1), strict=True):
        assert Path(run.log_dir).resolve() == (output / run.name).resolve()
        saved = yaml.safe_load((output / run.name / "config.yaml").read_text())
        assert saved["seed_everything"] == seed
        assert saved["data"]["init_args"]["seed"] == seed  # the split follows the seed
    rows = read_rows(output / "runs.csv")
    assert [row["run"] for row in rows] == ["default-seed0", "default-seed1"]
    for name in runner.TEST_METRICS:
        values = [logged_scalar(run.log_dir, name) for run in runs]
        assert [float(row[name]) for row in rows] == pytest.approx(values)
        table_cell = f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"
        assert table_cell in (output / "summary.md").read_text()
    assert (output / "summary.md").read_text() in capsys.readouterr().out


@pytest.mark.slow
def test_folds_partition_the_data_and_keep_runs_apart_without_a_logger(workdir: Path):
    Path("no-logger.yaml").write_text(NO_LOGGER)
    stack = ["configs/default.yaml", "no-logger.yaml"]
    runs = runner.run(["folds", "--config", *stack, "--folds", "2", *FAST])

    output = workdir / "logs" / "folds-default+no-logger"
    splits = []
    for fold, run in enumerate(runs):
        folder = output / f"default+no-logger-fold{fold}"
        # Without a logger each fold's config and checkpoints stay in its own folder.
        assert Path(run.log_dir).resolve() == folder.resolve()
        assert list((folder / "checkpoints").glob("*.ckpt"))
        splits.append(splits_of(folder / "config.yaml"))
        assert (splits[-1]["num_folds"], splits[-1]["fold"]) == (2, fold)
    (first, second) = splits
    assert not first["val"] & second["val"]
    assert first["val"] | second["val"] == first["val"] | first["train"]
    assert first["test"] == second["test"]
    assert not (workdir / "config.yaml").exists()
    assert [row["run"] for row in read_rows(output / "runs.csv")] == [r.name for r in runs]


def splits_of(saved_config: Path) -> dict:
    """The sample indices of each split a run's saved config draws, and its fold settings."""
    config = yaml.safe_load(saved_config.read_text())
    for fit_only in ("ckpt_path", "weights_only", "test_after_fit"):
        config.pop(fit_only, None)
    datamodule = main(config, run=False).datamodule
    datamodule.setup("fit")
    splits = {name: set(datamodule.datasets[name].indices) for name in ("train", "val", "test")}
    return {**splits, "num_folds": datamodule.num_folds, "fold": datamodule.fold}


class PruneTrialOne(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number == 1


@pytest.mark.slow
def test_a_search_records_pruned_trials_and_its_best_config_reruns(workdir: Path):
    space = load_search_space("configs/search/default.yaml")
    output = workdir / "logs" / "search"
    study = search(["configs/default.yaml"], space, 3, TRIAL, output, pruner=PruneTrialOne())

    states = [trial.state.name for trial in study.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert list(study.trials[1].intermediate_values) == [0]  # stopped after its first epoch
    rows = read_rows(output / "runs.csv")
    assert [row["state"] for row in rows] == states
    assert float(rows[study.best_trial.number]["val/loss"]) == pytest.approx(study.best_value)
    assert sorted(p.name for p in output.glob("trial_*")) == ["trial_000", "trial_001", "trial_002"]

    best = output / "best.yaml"
    config = yaml.safe_load(best.read_text())
    # The user's run folders, not the best trial's: a run of best.yaml gets its own.
    assert config["trainer"]["default_root_dir"] is None
    assert config["trainer"]["logger"]["init_args"]["version"] is None
    cli = run_cli("fit", "--config", str(best), *FAST)
    assert cli.trainer.state.finished
    max_lr = study.best_params["model.init_args.scheduler.init_args.max_lr"]
    assert cli.model.scheduler.keywords["max_lr"] == pytest.approx(max_lr)
    assert cli.model.net.dropout.p == study.best_params["model.init_args.net.init_args.dropout"]


def test_an_interrupted_runner_keeps_the_finished_runs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
):
    finished = []

    def first_finishes_then_interrupted(contender, name, args, metrics):
        if finished:
            raise KeyboardInterrupt
        finished.append(runner.Run(contender, name, {m: 0.5 for m in metrics}, "logs/x"))
        return finished[-1]

    monkeypatch.setattr(runner, "fit_and_test", first_finishes_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(["seeds", "--config", "configs/default.yaml", "--seeds", "0", "1"])
    output = workdir / "logs" / "seeds-default"
    assert [row["run"] for row in read_rows(output / "runs.csv")] == ["default-seed0"]
    assert "| default | 1 | 0.5000 |" in (output / "summary.md").read_text()


def test_the_table_counts_complete_runs_only():
    runs = [
        runner.Run("a", "a-seed0", {"test/f1": 0.5}),
        runner.Run("a", "a-seed1", {"test/f1": 0.7}),
        runner.Run("a", "a-seed2", {"test/f1": 0.9}),
        runner.Run("b", "trial_000", {"test/f1": 0.8}),
        runner.Run("b", "trial_001", {}, state="PRUNED"),
    ]
    assert runner.summarize(runs, ["test/f1"])["a"]["test/f1"] == pytest.approx((0.7, 0.2))
    table = runner.markdown(runs, ["test/f1"])
    assert "| a | 3 | 0.7000 ± 0.2000 |" in table
    assert "| b | 1 | 0.8000 |" in table


def test_contenders_stack_and_unknown_arguments_go_to_every_run():
    argv = ["seeds", "--config", "a.yaml", "b.yaml", "--config", "c.yaml", "--trainer.max_epochs=3"]
    options, extra = runner.parse_args([*argv, "--seeds", "1", "--", "--seeds=9"])
    assert options.config == [["a.yaml", "b.yaml"], ["c.yaml"]]
    assert options.seeds == [1]
    assert extra == ["--trainer.max_epochs=3", "--seeds=9"]
    assert runner.label_of(options.config[0]) == "a+b"


def test_a_missing_config_is_named_before_anything_runs(workdir: Path):
    argv = ["--config", "configs/default.yaml", "--config", "configs/nope.yaml"]
    with pytest.raises(FileNotFoundError, match=r"configs/nope\.yaml"):
        runner.run(["seeds", *argv])


def test_fewer_than_two_folds_or_two_searched_contenders_are_refused(workdir: Path):
    with pytest.raises(SystemExit, match="at least 2"):
        runner.run(["folds", "--config", "configs/default.yaml", "--folds", "1"])
    with pytest.raises(SystemExit, match="one contender"):
        runner.run(
            ["search", "--config", "configs/default.yaml", "--config", "configs/default.yaml"]
        )


def test_a_second_runner_gets_its_own_folder(tmp_path: Path):
    assert runner.unused_name(tmp_path, "folds-default") == "folds-default"
    (tmp_path / "folds-default").mkdir()
    (tmp_path / "folds-default-2").mkdir()
    assert runner.unused_name(tmp_path, "folds-default") == "folds-default-3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parameters: {a.b: {low: 1, high: 0}}", "parameters.a.b: low (1) must be below high"),
        ("parameters: {a.b: {low: 0, high: 1, log: true}}", "log: true needs low > 0"),
        ("parameters: {a.b: {choices: [1], low: 0}}", "choices must be a non-empty list"),
        ("parameters: {a.b: {lo: 1, high: 2}}", "unknown fields ['lo']"),
        ("direction: up\nparameters: {a.b: {choices: [1]}}", "direction must be minimize"),
        ("metric: val/acc", "`parameters` is empty"),
        ("sampler: cmaes\nparameters: {a.b: {choices: [1]}}", "sampler must be one of tpe, random"),
        (
            "sampler: grid\nparameters: {a.b: {low: 0.1, high: 0.5}}",
            "parameters.a.b: sampler: grid needs choices or a range with a step",
        ),
    ],
)
def test_search_file_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"space\.yaml") as error:
        load_search_space(path)
    assert message in str(error.value)


def test_choices_can_be_lists(tmp_path: Path):
    path = tmp_path / "space.yaml"
    path.write_text("parameters: {net.widths: {choices: [[8, 16], [16, 32]]}}")
    space = load_search_space(path)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    value = space.parameters[0].suggest(trial)
    assert value in ([8, 16], [16, 32])
    assert override_args({"net.widths": value}) == [f"--net.widths={value}"]


def test_the_search_file_chooses_the_sampler(tmp_path: Path):
    path = tmp_path / "space.yaml"
    for name, kind in [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("grid", optuna.samplers.GridSampler),
    ]:
        path.write_text(f"sampler: {name}\nparameters: {{a.b: {{choices: [1, 2]}}}}")
        assert isinstance(make_sampler(load_search_space(path), seed=0), kind)


@pytest.mark.slow
def test_a_grid_search_tries_every_combination_once_then_stops(workdir: Path):
    Path("grid.yaml").write_text(
        "sampler: grid\n"
        "pruner: null\n"
        "parameters:\n"
        "  model.init_args.scheduler.init_args.max_lr: {low: 0.001, high: 0.003, step: 0.002}\n"
        "  model.init_args.net.init_args.widths: {choices: [[8, 16], [16, 32]]}\n"
    )
    space = load_search_space("grid.yaml")
    study = search(["configs/default.yaml"], space, 10, TRIAL, workdir / "logs" / "grid")
    tried = sorted(
        (t.params["model.init_args.scheduler.init_args.max_lr"], t.params[WIDTHS])
        for t in study.trials
    )
    assert tried == [
        (0.001, "[16, 32]"),
        (0.001, "[8, 16]"),
        (0.003, "[16, 32]"),
        (0.003, "[8, 16]"),
    ], "10 trials asked for, the 4 combinations run"
    assert all(t.state.name == "COMPLETE" for t in study.trials)


WIDTHS = "model.init_args.net.init_args.widths"
