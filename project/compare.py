"""Compare configs over several seeds: fit each, test its best checkpoint, tabulate mean and std.

    python -m project.compare --config configs/experiments/longtail-ce.yaml \\
        --config configs/experiments/longtail-focal.yaml --seeds 0 1 2 \\
        --trainer.enable_progress_bar=false

Each ``--config`` is one contender; give several files after one ``--config``
to stack them (``--config configs/default.yaml configs/presets/x.yaml``). Every
contender is trained once per seed in this process through ``project.cli.main``
with ``--seed_everything`` and ``--data.init_args.seed`` set to the seed, so a
seed changes the initialisation, the shuffling and the data split. Arguments
this command does not know (``--trainer.max_epochs=5``; or everything after
``--``) go to every run. The table of mean and sample standard deviation is
printed and written as markdown (``--output``), rewritten after every run so
an interrupted comparison keeps what finished.

Each run gets its own ``--trainer.default_root_dir``, a folder beside the
table named after it (``logs/compare/<date-time>/<config>-seed<N>``). With a
logger it is unused (the logger's ``save_dir`` decides); without one
(``--trainer.logger=false``) it keeps each run's ``config.yaml`` and
checkpoints apart, where they would otherwise meet in the working directory
and the second run would stop rather than overwrite the first's config.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_METRICS = ("test/acc", "test/f1", "test/recall_min")


@dataclass
class RunResult:
    """One finished run: which contender, which seed, its test metrics and log folder."""

    label: str
    seed: int
    metrics: dict[str, float]
    log_dir: str | None


def label_of(configs: Sequence[str]) -> str:
    """A contender's name: its config file stems joined by " + "."""
    return " + ".join(Path(config).stem for config in configs)


def run_config(
    configs: Sequence[str],
    seed: int,
    extra_args: Sequence[str] = (),
    metrics: Sequence[str] = DEFAULT_METRICS,
    root_dir: Path | None = None,
) -> RunResult:
    """Fits one contender with one seed, tests its best checkpoint, returns the test metrics.

    ``root_dir`` is the run's ``trainer.default_root_dir``; the extra arguments
    may still set another.

    Raises:
        KeyError: A requested metric was not logged by the test run.
    """
    from project.cli import main

    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    if root_dir is not None:
        args.append(f"--trainer.default_root_dir={root_dir}")
    # The seed comes last so that it wins over the configs and the extra arguments.
    args += [
        *extra_args,
        "--test_after_fit=true",
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
    ]
    cli = main(args)
    logged = cli.trainer.callback_metrics
    missing = [name for name in metrics if name not in logged]
    if missing:
        raise KeyError(
            f"{label_of(configs)} (seed {seed}) logged no {missing}; its test run logged "
            f"{sorted(name for name in logged if name.startswith('test/'))}"
        )
    return RunResult(
        label_of(configs),
        seed,
        {name: float(logged[name]) for name in metrics},
        cli.trainer.log_dir,
    )


def summarize(
    results: Sequence[RunResult], metrics: Sequence[str]
) -> dict[str, dict[str, tuple[float, float | None]]]:
    """Per contender and metric: mean and sample standard deviation (``None`` for one seed)."""
    labels = list(dict.fromkeys(result.label for result in results))
    summary = {}
    for label in labels:
        runs = [result for result in results if result.label == label]
        summary[label] = {}
        for name in metrics:
            values = [run.metrics[name] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else None
            summary[label][name] = (statistics.fmean(values), spread)
    return summary


def markdown(results: Sequence[RunResult], metrics: Sequence[str]) -> str:
    """The mean ± std table per contender, then one row per run."""
    summary = summarize(results, metrics)
    seeds = {label: [r.seed for r in results if r.label == label] for label in summary}
    lines = [
        "| config | seeds | " + " | ".join(metrics) + " |",
        "|---|---|" + "---:|" * len(metrics),
    ]
    for label, values in summary.items():
        cells = [
            f"{mean:.4f}" if spread is None else f"{mean:.4f} ± {spread:.4f}"
            for mean, spread in values.values()
        ]
        seed_list = " ".join(str(seed) for seed in seeds[label])
        lines.append(f"| {label} | {seed_list} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean ± sample standard deviation over seeds. Each run:",
        "",
        "| config | seed | " + " | ".join(metrics) + " | logs |",
        "|---|---:|" + "---:|" * len(metrics) + "---|",
    ]
    for result in results:
        cells = " | ".join(f"{result.metrics[name]:.4f}" for name in metrics)
        lines.append(f"| {result.label} | {result.seed} | {cells} | {result.log_dir} |")
    return "\n".join(lines) + "\n"


def compare(
    contenders: Sequence[Sequence[str]],
    seeds: Sequence[int],
    extra_args: Sequence[str] = (),
    metrics: Sequence[str] = DEFAULT_METRICS,
    output: Path | None = None,
) -> list[RunResult]:
    """Runs every contender with every seed; writes the markdown to ``output`` after each run.

    Each run's ``default_root_dir`` is ``<output without .md>/<config>-seed<N>``,
    or under ``logs/compare/<date-time>/`` when there is no ``output``.
    """
    missing = [config for stack in contenders for config in stack if not Path(config).is_file()]
    if missing:
        raise FileNotFoundError(f"config files not found: {missing}")
    runs = output.with_suffix("") if output is not None else default_output().with_suffix("")
    results = []
    for stack in contenders:
        for seed in seeds:
            root_dir = runs / f"{label_of(stack).replace(' + ', '+')}-seed{seed}"
            results.append(run_config(stack, seed, extra_args, metrics, root_dir))
            if output is not None:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(markdown(results, metrics))
    return results


def default_output() -> Path:
    """``logs/compare/<date-time>.md``: where the table goes unless ``--output`` says."""
    return Path("logs/compare") / f"{time.strftime('%Y%m%d-%H%M%S')}.md"


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m project.compare",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Unknown arguments, and all after --, are passed to every run.",
    )
    parser.add_argument(
        "--config",
        action="append",
        nargs="+",
        required=True,
        help="One contender: a config file, or several stacked in order. Repeat per contender.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help="Test metrics to tabulate (keys of trainer.callback_metrics).",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Markdown file to write; default logs/compare/<date-time>.md.",
    )
    argv = list(argv)
    passthrough = []
    if "--" in argv:
        split = argv.index("--")
        argv, passthrough = argv[:split], argv[split + 1 :]
    options, unknown = parser.parse_known_args(argv)
    return options, unknown + passthrough


def main(argv: Sequence[str] | None = None) -> list[RunResult]:
    """Command-line entry: parses ``argv`` (``sys.argv[1:]`` when ``None``), runs, prints."""
    options, extra_args = parse_args(sys.argv[1:] if argv is None else argv)
    output = options.output or default_output()
    results = compare(options.config, options.seeds, extra_args, options.metrics, output)
    print(f"\n{markdown(results, options.metrics)}\nWritten to {output}")
    return results


if __name__ == "__main__":
    main()
