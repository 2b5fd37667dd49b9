"""Stratified k-fold cross-validation of one config: fit and test on every fold.

    python -m project.crossval --config configs/default.yaml --folds 5

Fold ``i`` validates on the ``i``-th stratified fold of the training and
validation samples and trains on the rest (``data.num_folds`` and
``data.fold``); the test split stays the same for every fold. Each fold is a
normal ``fit`` run (early stopping and checkpoints included) followed by a
test of its best checkpoint. The spread of the test metrics across folds shows
how much a result depends on which samples happened to be held out: a
difference between two configs smaller than this spread is noise.

Written to ``logs/crossval-<config>/`` (``-2``, ... when taken; ``--output`` for
the tables): one log folder per fold
(``fold_0``, ...), ``folds.csv`` (every test metric of every fold) and
``summary.csv`` (mean and standard deviation per metric). Arguments this
command does not know are passed to every fold, e.g. ``--trainer.max_epochs=10``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from project.cli import main

SUMMARY_METRICS = ("test/acc", "test/f1", "test/precision", "test/recall", "test/loss")


def unused_name(folder: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ...: the first not yet a folder in ``folder``.

    A second run then never writes into the first one's run folders (where
    Lightning would refuse to overwrite the saved config).
    """
    candidate, number = name, 1
    while (folder / candidate).exists():
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def fold_args(configs: list[str], folds: int, fold: int, name: str) -> list[str]:
    """``fit`` arguments for one fold, logging to ``<save_dir>/<name>/fold_<fold>``.

    ``default_root_dir`` is the same folder under ``logs/``: a run without a
    logger (``--trainer.logger=false``) keeps its config and checkpoints there,
    not in the working directory, where the second fold would find the
    first's config and stop.
    """
    return [
        "fit",
        *(arg for config in configs for arg in ("--config", config)),
        f"--data.init_args.num_folds={folds}",
        f"--data.init_args.fold={fold}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.logger.init_args.version=fold_{fold}",
        f"--trainer.default_root_dir={Path('logs') / name / f'fold_{fold}'}",
        "--test_after_fit=true",
    ]


def run_fold(configs: list[str], folds: int, fold: int, name: str, extra: list[str]) -> dict:
    """Fits and tests one fold; returns its test metrics (``test/...`` names) as floats."""
    cli = main([*fold_args(configs, folds, fold, name), *extra])
    metrics = {
        key: float(value)
        for key, value in cli.trainer.callback_metrics.items()
        if key.startswith("test/")
    }
    if not metrics:
        raise RuntimeError(f"fold {fold} logged no test metrics; was fit interrupted?")
    return metrics


def summarize(per_fold: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Mean and sample standard deviation (n - 1) of each metric over the folds."""
    names = sorted(set().union(*per_fold))
    summary = {}
    for name in names:
        values = [fold[name] for fold in per_fold if name in fold]
        spread = statistics.stdev(values) if len(values) > 1 else math.nan
        summary[name] = (statistics.fmean(values), spread)
    return summary


def write_results(
    output: Path, per_fold: list[dict[str, float]], summary: dict[str, tuple[float, float]]
) -> None:
    """``folds.csv``: one row per fold; ``summary.csv``: mean and std per metric."""
    names = list(summary)
    with (output / "folds.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["fold", *names])
        for fold, metrics in enumerate(per_fold):
            writer.writerow([fold, *(metrics.get(name, "") for name in names)])
    with (output / "summary.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["metric", "mean", "std", "folds"])
        for name, (mean, spread) in summary.items():
            writer.writerow([name, mean, spread, len(per_fold)])


def report(per_fold: list[dict[str, float]], summary: dict[str, tuple[float, float]]) -> str:
    """The table printed at the end: the main test metrics per fold, then mean ± std."""
    shown = [name for name in SUMMARY_METRICS if name in summary]
    head = f"{'':<10}" + "".join(f"{name:>16}" for name in shown)
    rows = [
        f"{'fold ' + str(i):<10}" + "".join(f"{fold[name]:>16.4f}" for name in shown)
        for i, fold in enumerate(per_fold)
    ]
    mean = f"{'mean':<10}" + "".join(f"{summary[name][0]:>16.4f}" for name in shown)
    spread = f"{'std':<10}" + "".join(f"{summary[name][1]:>16.4f}" for name in shown)
    return "\n".join([head, *rows, mean, spread])


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m project.crossval",
        description="Stratified k-fold cross-validation: fit and test each fold of one config. "
        "Unknown --key=value arguments go to every fold's config.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", action="append", required=True, help="training config (repeat to stack)"
    )
    parser.add_argument("--folds", type=int, default=5, help="number of folds (at least 2)")
    parser.add_argument(
        "--name",
        default=None,
        help="log folder name; default crossval-<config> (-2, -3, ... if taken)",
    )
    parser.add_argument("--output", default=None, help="folder for the tables; default logs/<name>")
    return parser.parse_known_args(argv)


def run(argv: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    """Runs the cross-validation from command-line arguments; returns mean and std per metric."""
    options, extra = parse_args(argv)
    if options.folds < 2:
        raise SystemExit(f"--folds must be at least 2, got {options.folds}")
    name = unused_name(Path("logs"), options.name or f"crossval-{Path(options.config[-1]).stem}")
    output = Path(options.output or Path("logs") / name)
    output.mkdir(parents=True, exist_ok=True)
    per_fold = [
        run_fold(options.config, options.folds, fold, name, extra) for fold in range(options.folds)
    ]
    summary = summarize(per_fold)
    write_results(output, per_fold, summary)
    print(
        f"\n{options.folds}-fold cross-validation of {', '.join(options.config)}\n"
        f"{report(per_fold, summary)}\n"
        f"  per fold   {output / 'folds.csv'}\n"
        f"  summary    {output / 'summary.csv'}",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    run()
