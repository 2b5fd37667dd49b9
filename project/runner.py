"""Run configs several times: over seeds, over folds, or as an Optuna search.

    python -m project.runner seeds --config A.yaml --config B.yaml --seeds 0 1 2
    python -m project.runner folds --config configs/default.yaml --folds 5
    python -m project.runner search --config configs/default.yaml --trials 20

Each ``--config`` is one contender; several files after one ``--config`` are
stacked (``--config configs/default.yaml configs/presets/gpu.yaml``). Arguments
this command does not know (``--trainer.max_epochs=5``, or all after ``--``) go
to every run. Each run is ``python -m project fit`` in this process.

- ``seeds``: every contender is fitted once per seed (``seed_everything`` and
  ``data.init_args.seed``: initialisation, shuffling and split), then its best
  checkpoint is tested.
- ``folds``: fold ``i`` validates on the ``i``-th stratified fold of the train
  and validation samples and trains on the rest; then its best checkpoint is
  tested on the test split, the same for every fold.
- ``search``: Optuna samples the keys of a search file (``--search``,
  ``configs/search/default.yaml``), scores a trial by its best validation
  value (the test split is never used) and prunes trials that trail at the
  same epoch. ``best.yaml`` is the best trial's complete config, for
  ``python -m project fit --config <output>/best.yaml``. Its code is in
  ``project.search``; it needs the ``tune`` extra.

Everything goes to ``logs/<mode>-<config>/`` (``-2``, ``-3``, ... when taken;
``--output`` for another): one folder per run, ``runs.csv`` (every run's
metrics) and ``summary.md`` (mean ± sample standard deviation per contender),
rewritten after every run so an interrupted runner keeps what finished. The
run folder is the run's ``trainer.default_root_dir`` and, for a logger with a
name and a version (TensorBoard, CSV), its log folder under the logger's
``save_dir``; without a logger the runs' configs and checkpoints stay apart.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from project.cli import ProjectCLI, main

PROG = "python -m project.runner"
TEST_METRICS = ("test/acc", "test/f1", "test/recall_min")
DEFAULT_SEARCH = "configs/search/default.yaml"


@dataclass
class Run:
    """One run of one contender: its metrics, log folder and (for trials) state and values."""

    contender: str
    name: str
    metrics: dict[str, float]
    log_dir: str | None = None
    state: str = "COMPLETE"
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = math.nan  # wall time of the fit and its test


# -- one run ---------------------------------------------------------------------------


def label_of(stack: Sequence[str]) -> str:
    """A contender's name: its config file stems joined by ``+``."""
    return "+".join(Path(config).stem for config in stack)


def unused_name(folder: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ...: the first that is not yet in ``folder``."""
    candidate, number = name, 1
    while (folder / candidate).exists():
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def config_args(stack: Sequence[str]) -> list[str]:
    return [arg for config in stack for arg in ("--config", config)]


def build(stack: Sequence[str], extra: Sequence[str]) -> ProjectCLI:
    """The contender's CLI, built but not run: a bad key fails before the first run."""
    return main([*config_args(stack), *extra], run=False, prog=PROG)


def has_run_folders(cli: ProjectCLI) -> bool:
    """Whether the config's logger takes a ``name`` and a ``version`` (TensorBoard, CSV)."""
    init_args = getattr(cli.config.get("trainer", {}).get("logger"), "init_args", None) or {}
    return "name" in init_args and "version" in init_args


def run_args(stack: Sequence[str], folder: Path, extra: Sequence[str], named: bool) -> list[str]:
    """Arguments of one run whose files go to ``folder`` (its logger's folder when ``named``)."""
    # Before the extra arguments, which may set another root.
    args = [*config_args(stack), f"--trainer.default_root_dir={folder}", *extra]
    if named:
        args += [
            f"--trainer.logger.init_args.name={folder.parent.name}",
            f"--trainer.logger.init_args.version={folder.name}",
        ]
    return args


def fit_and_test(contender: str, name: str, args: list[str], metrics: Sequence[str]) -> Run:
    """``fit`` with the test of the best checkpoint; the run's ``test/`` metrics.

    Raises:
        KeyError: A metric of ``metrics`` was not logged by the test.
    """
    started = time.perf_counter()
    cli = main(["fit", *args, "--test_after_fit=true"])
    seconds = time.perf_counter() - started
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    if missing := [metric for metric in metrics if metric not in logged]:
        raise KeyError(
            f"{contender} ({name}) logged no {missing}; its test logged {sorted(logged)}"
        )
    return Run(contender, name, logged, cli.trainer.log_dir, seconds=seconds)


# -- the tables ------------------------------------------------------------------------


def summarize(runs: Sequence[Run], metrics: Sequence[str]) -> dict[str, dict[str, tuple]]:
    """Per contender and metric: mean and sample standard deviation (``None`` for one run).

    Only complete runs count (not pruned or failed trials).
    """
    summary: dict[str, dict[str, tuple]] = {}
    for contender in dict.fromkeys(run.contender for run in runs):
        done = [r for r in runs if r.contender == contender and r.state == "COMPLETE"]
        summary[contender] = {}
        for name in metrics:
            values = [run.metrics[name] for run in done if name in run.metrics]
            spread = statistics.stdev(values) if len(values) > 1 else None
            summary[contender][name] = (statistics.fmean(values) if values else math.nan, spread)
    return summary


def markdown(runs: Sequence[Run], metrics: Sequence[str]) -> str:
    """The table of mean ± sample standard deviation per contender."""
    lines = [f"| config | runs | {' | '.join(metrics)} |", "|---|---:|" + "---:|" * len(metrics)]
    for contender, values in summarize(runs, metrics).items():
        done = sum(r.contender == contender and r.state == "COMPLETE" for r in runs)
        cells = [f"{m:.4f}" if s is None else f"{m:.4f} ± {s:.4f}" for m, s in values.values()]
        lines.append(f"| {contender} | {done} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def write_tables(output: Path, runs: Sequence[Run], metrics: Sequence[str]) -> None:
    """``runs.csv`` (one row per run, every metric) and ``summary.md`` in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(name for run in runs for name in run.metrics))
    keys = list(dict.fromkeys(key for run in runs for key in run.params))
    with (output / "runs.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["config", "run", "state", *names, *keys, "seconds", "log_dir"])
        for run in runs:
            writer.writerow(
                [run.contender, run.name, run.state]
                + [run.metrics.get(name, "") for name in names]
                + [run.params.get(key, "") for key in keys]
                + [f"{run.seconds:.1f}", run.log_dir or ""]
            )
    (output / "summary.md").write_text(markdown(runs, metrics))


# -- seeds and folds -------------------------------------------------------------------


def seed_variants(seeds: Sequence[int]) -> dict[str, list[str]]:
    return {f"seed{s}": [f"--seed_everything={s}", f"--data.init_args.seed={s}"] for s in seeds}


def fold_variants(folds: int) -> dict[str, list[str]]:
    if folds < 2:
        raise SystemExit(f"--folds must be at least 2, got {folds}")
    return {
        f"fold{i}": [f"--data.init_args.num_folds={folds}", f"--data.init_args.fold={i}"]
        for i in range(folds)
    }


def repeat(
    contenders: Sequence[Sequence[str]],
    variants: dict[str, list[str]],
    extra: Sequence[str],
    metrics: Sequence[str],
    output: Path,
) -> list[Run]:
    """Fits and tests every contender once per variant (its arguments win over the rest)."""
    named = [has_run_folders(build(stack, extra)) for stack in contenders]
    runs: list[Run] = []
    for stack, logger_folders in zip(contenders, named, strict=True):
        for variant, variant_args in variants.items():
            name = f"{label_of(stack)}-{variant}"
            args = [*run_args(stack, output / name, extra, logger_folders), *variant_args]
            runs.append(fit_and_test(label_of(stack), name, args, metrics))
            write_tables(output, runs, metrics)
    return runs


# -- the command line ------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The runner's options, and the arguments for every run (unknown ones, all after ``--``)."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "--config",
        action="append",
        nargs="+",
        required=True,
        help="One contender: a config file, or several stacked in order. Repeat per contender.",
    )
    common.add_argument("--output", type=Path, help="default: logs/<mode>-<config>[-2, -3, ...]")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Unknown arguments, and all after --, go to every run.",
        allow_abbrev=False,
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    kwargs = {"parents": [common], "allow_abbrev": False}
    seeds = modes.add_parser("seeds", help="every contender once per seed", **kwargs)
    seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    folds = modes.add_parser("folds", help="stratified k-fold cross-validation", **kwargs)
    folds.add_argument("--folds", type=int, default=5, help="number of folds (at least 2)")
    for tested in (seeds, folds):
        tested.add_argument("--metrics", nargs="+", default=list(TEST_METRICS), help="tabulated")
    trials = modes.add_parser("search", help="an Optuna search over a search file", **kwargs)
    trials.add_argument("--search", default=DEFAULT_SEARCH, help="search space")
    trials.add_argument("--trials", type=int, default=20, help="number of trials")
    trials.add_argument("--timeout", type=float, help="start no trial after this many seconds")
    trials.add_argument("--storage", help="Optuna storage URL (sqlite:///f.db) to keep or resume")
    trials.add_argument("--seed", type=int, default=0, help="seed of the sampler")
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    options, unknown = parser.parse_known_args(argv[:split])
    return options, unknown + argv[split + 1 :]


def run(argv: Sequence[str] | None = None) -> list[Run]:
    """The command line: parses ``argv`` (``sys.argv[1:]`` when ``None``), runs, prints."""
    options, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if missing := [c for stack in options.config for c in stack if not Path(c).is_file()]:
        raise FileNotFoundError(f"config files not found: {missing}")
    output = options.output
    if output is None:
        name = f"{options.mode}-{label_of(options.config[0])}"
        # A stored study continues in its own folder.
        stored = getattr(options, "storage", None) is not None
        output = Path("logs") / (name if stored else unused_name(Path("logs"), name))
    if options.mode == "search":
        from project.search import run_search

        runs, metrics = run_search(options, extra, output)
    else:
        seeds = options.mode == "seeds"
        variants = seed_variants(options.seeds) if seeds else fold_variants(options.folds)
        runs = repeat(options.config, variants, extra, options.metrics, output)
        metrics = options.metrics
    print(f"\n{markdown(runs, metrics)}\n  every run  {output / 'runs.csv'}", flush=True)
    if (output / "best.yaml").is_file():
        best = output / "best.yaml"
        print(f"  best       {best}\n  train it   python -m project fit --config {best}")
    return runs


if __name__ == "__main__":
    run()
