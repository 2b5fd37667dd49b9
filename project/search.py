"""The ``search`` mode of ``python -m project.runner``: Optuna over a YAML search space.

A search file (``configs/search/default.yaml``) names the validation metric,
its direction, the sampler (TPE, random or grid), the pruner (Optuna's
MedianPruner) and the config keys to search, each with a range or a list of
choices. Needs the ``tune`` extra.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from project.cli import main
from project.runner import (
    DEFAULT_SEARCH,
    PROG,
    Run,
    build,
    config_args,
    has_run_folders,
    label_of,
    run_args,
    write_tables,
)

# Values Optuna stores as they are; other choices (a list of widths) are offered as JSON text.
PLAIN = (type(None), bool, int, float, str)

# The search file's ``sampler:``, each an Optuna sampler seeded by ``--seed``.
SAMPLERS = ("tpe", "random", "grid")


@dataclass
class Parameter:
    """One searched config key: a range (``low``, ``high``) or a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @property
    def encoded(self) -> bool:
        """Whether the choices are offered to Optuna as JSON text (lists, mappings)."""
        return self.choices is not None and not all(isinstance(c, PLAIN) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        """This trial's value for the key."""
        if self.choices is not None:
            if not self.encoded:
                return trial.suggest_categorical(self.key, self.choices)
            encoded = [json.dumps(choice) for choice in self.choices]
            return json.loads(trial.suggest_categorical(self.key, encoded))
        if all(isinstance(v, int) for v in (self.low, self.high, self.step or 1)):
            return trial.suggest_int(
                self.key, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """Every value a grid search tries: the choices, or the range in its steps."""
        if self.choices is not None:
            return [json.dumps(c) for c in self.choices] if self.encoded else list(self.choices)
        assert self.low is not None and self.high is not None and self.step is not None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + i * self.step for i in range(count)]
        if all(isinstance(v, int) for v in (self.low, self.high, self.step)):
            return [int(v) for v in values]
        return [round(v, 12) for v in values]


@dataclass
class SearchSpace:
    """A search file: the validation metric, its direction, the pruner and the parameters."""

    metric: str
    direction: str
    parameters: list[Parameter]
    pruner: dict[str, Any] | None
    source: str
    sampler: str = "tpe"


def load_search_space(path: str | Path) -> SearchSpace:
    """Reads and checks a search file; errors name the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"search file {str(path)!r} not found; see {DEFAULT_SEARCH}")
    spec = yaml.safe_load(path.read_text()) or {}
    known = {"metric", "direction", "sampler", "pruner", "parameters"}
    if unknown := sorted(set(spec) - known):
        raise ValueError(f"{path}: unknown keys {unknown}; a search file has {sorted(known)}")
    direction = spec.get("direction", "minimize")
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"{path}: direction must be minimize or maximize, got {direction!r}")
    if not spec.get("parameters"):
        raise ValueError(f"{path}: `parameters` is empty; add config keys to search")
    parameters = [
        _parameter(f"{path}: parameters.{k}", k, v) for k, v in spec["parameters"].items()
    ]
    sampler = spec.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ValueError(f"{path}: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "grid":
        for parameter in parameters:
            if parameter.choices is None and parameter.step is None:
                raise ValueError(
                    f"{path}: parameters.{parameter.key}: sampler: grid needs choices or a "
                    "range with a step"
                )
    metric = spec.get("metric", "val/loss")
    pruner = spec.get("pruner", {})
    return SearchSpace(metric, direction, parameters, pruner, str(path), sampler)


def _parameter(where: str, key: str, value: Any) -> Parameter:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: give {{low: .., high: ..}} or {{choices: [..]}}, got {value!r}")
    if unknown := sorted(set(value) - {"low", "high", "log", "step", "choices"}):
        raise ValueError(
            f"{where}: unknown fields {unknown}; allowed: choices, high, log, low, step"
        )
    if "choices" in value:
        if set(value) != {"choices"} or not value["choices"]:
            raise ValueError(f"{where}: choices must be a non-empty list and stand alone")
        return Parameter(key, choices=list(value["choices"]))
    low, high = value.get("low"), value.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{where}: a range needs numbers low and high, got {low!r} and {high!r}")
    if low >= high:
        raise ValueError(f"{where}: low ({low}) must be below high ({high})")
    if value.get("log") and low <= 0:
        raise ValueError(f"{where}: log: true needs low > 0, got {low}")
    return Parameter(key, low=low, high=high, log=bool(value.get("log")), step=value.get("step"))


def override_args(values: dict[str, Any]) -> list[str]:
    """``--key=value`` arguments that set each config key to its value."""
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]


def trial_runs(study: Any, contender: str, metric: str) -> list[Run]:
    """The study's finished trials as runs (pruned and failed ones without a value)."""
    return [
        Run(
            contender,
            f"trial_{t.number:03d}",
            {} if t.value is None else {metric: t.value},
            t.user_attrs.get("log_dir"),
            t.state.name,
            t.params,
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else math.nan,
        )
        for t in study.trials
        if t.state.is_finished()
    ]


def search(
    stack: Sequence[str],
    space: SearchSpace,
    trials: int,
    extra: Sequence[str],
    output: Path,
    *,
    storage: str | None = None,
    timeout: float | None = None,
    seed: int = 0,
    pruner: Any = None,
) -> Any:
    """Runs an Optuna study of ``trials`` trials; returns it. ``pruner`` overrides the file's.

    Each trial is a fresh model and data module from the configs with the
    trial's values; Optuna's ``PyTorchLightningPruningCallback`` reports the
    metric after each validation and stops a trial the pruner rejects.
    """
    import torch

    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback
    except ImportError as error:
        raise SystemExit(f"{PROG} search needs {error.name}: pip install -e '.[tune]'") from error

    checked = build(stack, extra)
    if checked.trainer.world_size > 1:
        raise ValueError(
            f"each trial runs in this one process, but the configs ask for "
            f"{checked.trainer.world_size} (devices x num_nodes); set --trainer.devices=1"
        )
    named = has_run_folders(checked)
    study = optuna.create_study(
        study_name=output.name,
        storage=storage,
        load_if_exists=storage is not None,
        direction=space.direction,
        sampler=make_sampler(space, seed),
        pruner=pruner or make_pruner(space.pruner),
    )

    def objective(trial: optuna.Trial) -> float:
        overrides = override_args({p.key: p.suggest(trial) for p in space.parameters})
        trial.set_user_attr("overrides", overrides)
        args = [*run_args(stack, output / f"trial_{trial.number:03d}", extra, named), *overrides]
        cli = main(args, run=False, prog=PROG)
        trial.set_user_attr("log_dir", str(cli.trainer.log_dir))
        cli.trainer.callbacks.append(PyTorchLightningPruningCallback(trial, space.metric))
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        reported = study.get_trials(deepcopy=False)[trial.number].intermediate_values
        if not reported:
            logged = sorted(k for k in cli.trainer.callback_metrics if k.startswith("val"))
            raise KeyError(
                f"search metric {space.metric!r} was not logged; validation logged {logged}. "
                f"Set `metric:` in {space.source} to one of them"
            )
        values = list(reported.values())
        if not all(map(math.isfinite, values)):
            return math.nan  # Optuna records the trial as failed
        return min(values) if space.direction == "minimize" else max(values)

    def write(study: optuna.Study, _: Any) -> None:
        write_tables(output, trial_runs(study, label_of(stack), space.metric), [space.metric])

    study.optimize(
        objective,
        n_trials=trials,
        timeout=timeout,
        # A diverging trial or one out of memory is recorded as failed; the search goes on.
        catch=(FloatingPointError, torch.cuda.OutOfMemoryError),
        callbacks=[write],
    )
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        config = checked.parser.parse_args(
            [*config_args(stack), *extra, *study.best_trial.user_attrs["overrides"]]
        )
        write_best(checked.parser.dump(config, skip_none=False), study, space, output)
    return study


def make_sampler(space: SearchSpace, seed: int) -> Any:
    """The search file's sampler: TPE (Bayesian), random, or grid (every combination once)."""
    import optuna

    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "grid":
        grid = {parameter.key: parameter.grid() for parameter in space.parameters}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(settings: dict[str, Any] | None) -> Any:
    """Optuna's MedianPruner with the search file's settings; ``None`` turns pruning off."""
    import optuna

    if settings is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(**settings)


def write_best(config: str, study: Any, space: SearchSpace, output: Path) -> Path:
    """Writes ``best.yaml``: ``config`` (the best trial's, as the CLI's parser dumps it)."""
    path = output / "best.yaml"
    path.write_text(
        f"# Best of {len(study.trials)} trials of `{PROG} search` ({space.metric} = "
        f"{study.best_value:.6g}, trial {study.best_trial.number}); search file {space.source}.\n"
        f"#   python -m project fit --config {path}\n{config}"
    )
    return path


def run_search(options: Any, extra: list[str], output: Path) -> tuple[list[Run], list[str]]:
    """``python -m project.runner search``: the trials as runs, and the metric tabulated."""
    if len(options.config) > 1:
        raise SystemExit("search takes one contender: stack its files after one --config")
    space = load_search_space(options.search)
    stack = options.config[0]
    study = search(
        stack,
        space,
        options.trials,
        extra,
        output,
        storage=options.storage,
        timeout=options.timeout,
        seed=options.seed,
    )
    if not (output / "best.yaml").is_file():
        raise SystemExit(f"no trial completed; see {output / 'runs.csv'}")
    return trial_runs(study, label_of(stack), space.metric), [space.metric]
