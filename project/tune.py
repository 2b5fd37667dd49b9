"""Hyperparameter search with Optuna over the same YAML configs as training.

    python -m project.tune --config configs/default.yaml --trials 20
    python -m project.tune --config configs/default.yaml --search configs/search/default.yaml \\
        --trials 50 --storage sqlite:///logs/tune.db --trainer.max_epochs=15

Each trial builds a fresh model and data module from the configs with the
trial's values set (the keys of the search file, ``configs/search/default.yaml``),
trains it, and is judged by the best value of the search metric on the
validation split; the test split is never looked at. Trials that fall behind
the median of earlier ones at the same step are stopped early (pruned).

Written to ``logs/tune-<config>/`` (``-2``, ``-3``, ... when taken; ``--output``
for the tables): one log folder per trial
(``trial_000``, ...), ``trials.csv`` and ``best.yaml``, the complete config of
the best trial, ready to run::

    python -m project fit --config logs/tune-default/best.yaml

Arguments this command does not know are passed to every trial, e.g.
``--trainer.max_epochs=10`` for shorter trials. Needs ``pip install optuna``
(the ``tune`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from project.cli import ProjectCLI, main
from project.crossval import unused_name

DEFAULT_SEARCH = "configs/search/default.yaml"
# Values Optuna stores as they are; anything else (a list of widths) is
# offered to it as JSON text and decoded for the trial.
PLAIN = (type(None), bool, int, float, str)


@dataclass
class Parameter:
    """One searched config key: a range (``low``, ``high``) or a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def suggest(self, trial: Any) -> Any:
        """This trial's value for the key."""
        if self.choices is not None:
            if all(isinstance(choice, PLAIN) for choice in self.choices):
                return trial.suggest_categorical(self.key, self.choices)
            encoded = [json.dumps(choice) for choice in self.choices]
            return json.loads(trial.suggest_categorical(self.key, encoded))
        bounds = (self.low, self.high, 1 if self.step is None else self.step)
        if all(isinstance(value, int) for value in bounds):
            return trial.suggest_int(self.key, self.low, self.high, step=bounds[2], log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


@dataclass
class SearchSpace:
    """A search file: the metric, its direction, the pruner and the parameters."""

    metric: str
    direction: str
    parameters: list[Parameter]
    pruner: dict[str, Any] | None = field(default_factory=dict)
    source: str = ""


def load_search_space(path: str | Path) -> SearchSpace:
    """Reads and checks a search file; errors name the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"search file {str(path)!r} not found; pass --search with a file like {DEFAULT_SEARCH}"
        )
    spec = yaml.safe_load(path.read_text()) or {}
    known = {"metric", "direction", "pruner", "parameters"}
    if unknown := sorted(set(spec) - known):
        raise ValueError(f"{path}: unknown keys {unknown}; a search file has {sorted(known)}")
    direction = spec.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"{path}: direction must be minimize or maximize, got {direction!r}")
    if not spec.get("parameters"):
        raise ValueError(f"{path}: `parameters` is empty; add config keys to search")
    parameters = [_parameter(path, key, value) for key, value in spec["parameters"].items()]
    return SearchSpace(
        metric=spec.get("metric", "val/loss"),
        direction=direction,
        parameters=parameters,
        pruner=spec.get("pruner", {}),
        source=str(path),
    )


def _parameter(path: Path, key: str, value: Any) -> Parameter:
    where = f"{path}: parameters.{key}"
    if not isinstance(value, dict):
        raise ValueError(f"{where}: give {{low: .., high: ..}} or {{choices: [..]}}, got {value!r}")
    allowed = {"low", "high", "log", "step", "choices"}
    if unknown := sorted(set(value) - allowed):
        raise ValueError(f"{where}: unknown fields {unknown}; allowed: {sorted(allowed)}")
    if "choices" in value:
        if set(value) != {"choices"} or not value["choices"]:
            raise ValueError(f"{where}: choices must be a non-empty list and stand alone")
        return Parameter(key, choices=list(value["choices"]))
    if "low" not in value or "high" not in value:
        raise ValueError(f"{where}: a range needs both low and high")
    low, high = value["low"], value["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if low >= high:
        raise ValueError(f"{where}: low ({low}) must be below high ({high})")
    if value.get("log") and low <= 0:
        raise ValueError(f"{where}: log: true needs low > 0, got {low}")
    return Parameter(key, low=low, high=high, log=bool(value.get("log")), step=value.get("step"))


def override_args(values: dict[str, Any]) -> list[str]:
    """Command-line overrides (``--key=value``) that set each config key to its value."""
    return [
        f"--{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in values.items()
    ]


class TrialMonitor(Callback):
    """Reports the search metric to Optuna after each validation and stops pruned trials.

    Args:
        trial: The Optuna trial this run belongs to.
        metric: Logged metric to report, e.g. ``val/loss``.
        direction: ``minimize`` or ``maximize``: which value is the best.
    """

    def __init__(self, trial: Any, metric: str, direction: str) -> None:
        self.trial = trial
        self.metric = metric
        self.direction = direction
        self.values: list[float] = []
        self.pruned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.metric not in trainer.callback_metrics:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val"))
            raise KeyError(
                f"search metric {self.metric!r} was not logged; validation logged {logged}. "
                "Set `metric:` in the search file to one of them"
            )
        value = float(trainer.callback_metrics[self.metric])
        self.values.append(value)
        self.trial.report(value, step=trainer.global_step)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True

    @property
    def best(self) -> float:
        """The best value reported (NaN when none, or when training diverged)."""
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite or len(finite) < len(self.values):
            return math.nan
        return min(finite) if self.direction == "minimize" else max(finite)


def build_cli(args: list[str]) -> ProjectCLI:
    """The same CLI as ``python -m project``, built but not run.

    Each trial needs its own callback on the trainer before fit starts.
    """
    return main(args, run=False, prog="python -m project.tune")


def has_run_folders(cli: ProjectCLI) -> bool:
    """Whether the config's logger takes a ``name`` and a ``version`` (TensorBoard, CSV)."""
    logger = cli.config.get("trainer", {}).get("logger")
    init_args = getattr(logger, "init_args", None) or {}
    return "name" in init_args and "version" in init_args


def trial_folder(trial: Any) -> str:
    """``trial_000``, ``trial_001``, ...: one trial's log folder."""
    return f"trial_{trial.number:03d}"


@dataclass
class Study:
    """One search: the configs, the space, and where results go."""

    configs: list[str]
    space: SearchSpace
    name: str
    output: Path
    extra_args: list[str] = field(default_factory=list)
    use_logger_folders: bool = True

    @property
    def config_args(self) -> list[str]:
        return [arg for config in self.configs for arg in ("--config", config)]

    @property
    def base_args(self) -> list[str]:
        return self.config_args + self.extra_args

    def check(self) -> None:
        """Builds the configs once, so a bad key fails before the first trial."""
        cli = build_cli(self.base_args)
        if cli.trainer.world_size > 1:
            raise ValueError(
                f"tune runs each trial in one process, but the configs ask for "
                f"{cli.trainer.world_size} (devices x num_nodes); drop ddp presets or set "
                "--trainer.devices=1"
            )
        # Without such a logger, each trial's root folder is its log folder.
        self.use_logger_folders = has_run_folders(cli)

    def objective(self, trial: Any) -> float:
        """Trains one fresh model with the trial's values; returns its best validation metric."""
        import optuna

        values = {p.key: p.suggest(trial) for p in self.space.parameters}
        # The trial's folder, as the logger names it: without such a logger the
        # trial's config and checkpoints go there, where they would otherwise meet
        # in the working directory (the second trial would stop at the first's
        # config.yaml). Before the extra arguments, which may set another.
        root_dir = f"--trainer.default_root_dir={Path('logs') / self.name / trial_folder(trial)}"
        args = [*self.config_args, root_dir, *self.extra_args, *override_args(values)]
        if self.use_logger_folders:
            args += [
                f"--trainer.logger.init_args.name={self.name}",
                f"--trainer.logger.init_args.version={trial_folder(trial)}",
            ]
        cli = build_cli(args)
        monitor = TrialMonitor(trial, self.space.metric, self.space.direction)
        cli.trainer.callbacks.append(monitor)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        trial.set_user_attr("log_dir", str(cli.trainer.log_dir))
        trial.set_user_attr("overrides", override_args(values))
        if monitor.pruned:
            raise optuna.TrialPruned(f"pruned at step {cli.trainer.global_step}")
        return monitor.best

    def write_best(self, study: Any) -> Path:
        """Writes the complete config of the best trial as ``best.yaml``."""
        args = ["fit", *self.base_args, *study.best_trial.user_attrs["overrides"], "--print_config"]
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                main(args)
        except SystemExit as exit_info:  # --print_config exits once it has printed
            if exit_info.code not in (0, None):
                raise RuntimeError(f"could not print the best config: {' '.join(args)}") from None
        path = self.output / "best.yaml"
        header = (
            f"# Best of {len(study.trials)} trials of `python -m project.tune` "
            f"({self.space.metric} = {study.best_value:.6g}, trial {study.best_trial.number}).\n"
            f"# Configs: {', '.join(self.configs)}; search: {self.space.source}.\n"
            f"#   python -m project fit --config {path}\n"
        )
        path.write_text(header + printed.getvalue())
        return path

    def write_trials(self, study: Any) -> Path:
        """Writes every trial's state, value and parameters to ``trials.csv``."""
        path = self.output / "trials.csv"
        keys = [p.key for p in self.space.parameters]
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["trial", "state", self.space.metric, *keys, "log_dir"])
            for trial in study.trials:
                writer.writerow(
                    [trial.number, trial.state.name, trial.value]
                    + [trial.params.get(key) for key in keys]
                    + [trial.user_attrs.get("log_dir", "")]
                )
        return path


def make_pruner(settings: dict[str, Any] | None) -> Any:
    """Optuna's MedianPruner with the search file's settings; ``None`` turns pruning off."""
    import optuna

    if settings is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(**settings)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m project.tune",
        description="Hyperparameter search with Optuna over the project's YAML configs. "
        "Unknown --key=value arguments go to every trial's config.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", action="append", required=True, help="training config (repeat to stack)"
    )
    parser.add_argument("--search", default=DEFAULT_SEARCH, help="search-space YAML")
    parser.add_argument("--trials", type=int, default=20, help="number of trials")
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--study-name", default=None, help="default: tune-<config> (-2, -3, ... if taken)"
    )
    parser.add_argument(
        "--storage", default=None, help="Optuna storage URL (sqlite:///file.db) to keep or resume"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    parser.add_argument("--output", default=None, help="folder for results; default logs/<study>")
    return parser.parse_known_args(argv)


def run(argv: Sequence[str] | None = None) -> Any:
    """Runs a search from command-line arguments; returns the Optuna study."""
    try:
        import optuna
    except ImportError as error:
        raise SystemExit("python -m project.tune needs Optuna: pip install optuna") from error

    options, extra = parse_args(argv)
    space = load_search_space(options.search)
    name = options.study_name or f"tune-{Path(options.config[-1]).stem}"
    if options.storage is None:  # a new study: new folders (a stored one continues its own)
        name = unused_name(Path("logs"), name)
    output = Path(options.output or Path("logs") / name)
    output.mkdir(parents=True, exist_ok=True)
    search = Study(options.config, space, name, output, extra_args=extra)
    search.check()

    study = optuna.create_study(
        study_name=name,
        storage=options.storage,
        load_if_exists=options.storage is not None,
        direction=space.direction,
        sampler=optuna.samplers.TPESampler(seed=options.seed),
        pruner=make_pruner(space.pruner),
    )
    # A diverging trial (NaN loss) or one that runs out of memory is recorded
    # as failed; the search goes on.
    study.optimize(
        search.objective,
        n_trials=options.trials,
        timeout=options.timeout,
        catch=(FloatingPointError, torch.cuda.OutOfMemoryError),
    )
    trials_csv = search.write_trials(study)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise SystemExit(f"no trial completed; see {trials_csv}")
    best_yaml = search.write_best(study)
    lines = [
        "",
        f"Best of {len(study.trials)} trials ({len(complete)} completed): "
        f"{space.metric} = {study.best_value:.6g} (trial {study.best_trial.number})",
        *(f"  {key}: {value}" for key, value in study.best_trial.params.items()),
        f"  trials     {trials_csv}",
        f"  config     {best_yaml}",
        f"  train it   python -m project fit --config {best_yaml}",
    ]
    print("\n".join(lines), flush=True)
    return study


if __name__ == "__main__":
    run()
