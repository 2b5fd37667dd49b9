"""The README's results tables, regenerated: every figure a mean ± std over seeds.

    python -m benchmarks.results                      # the tables that take at most 15 minutes
    python -m benchmarks.results digits transfer      # some of them, by name
    python -m benchmarks.results fashion --fashion-root /usr/share/datasets/fashion-mnist

Each table is ``python -m project.runner seeds`` over its configs (seeds 0-4
unless ``--seeds`` says otherwise): every run is a ``fit`` whose best checkpoint
(``configs/base.yaml``: the final weights) is tested, with the seed setting the
initialisation, the shuffling and the split. The output is the tables as the
README shows them, per-seed values, mean ± sample standard deviation and the
seconds per run, then the machine they were measured on. Arguments this command
does not know go to every run (``--trainer.max_epochs=1`` for a quick check that
everything runs).

FashionMNIST's tables need its four files: Debian's ``dataset-fashion-mnist``
package puts them in ``/usr/share/datasets/fashion-mnist``, which is the
default of ``--fashion-root`` when it exists.

Without table names, only the tables whose five seeds took at most
``QUICK_MINUTES`` on a 2-core CPU run (``Table.minutes``, also in ``--help``);
the others run when named.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.harness import machine_facts
from project.cli import main as fit
from project.runner import Run, label_of, repeat, seed_variants, write_tables

DEFAULT = "configs/default.yaml"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
# The FashionMNIST figures were measured with bfloat16 autocast (a CPU with AVX512-BF16).
BF16_CPU = "configs/presets/bf16-mixed-cpu.yaml"
# Tables run without names: those whose five seeds take at most this long.
QUICK_MINUTES = 15


@dataclass
class Table:
    """One results table: contenders (config stacks) under a label each, and what is shown."""

    title: str
    contenders: dict[str, list[str]]
    metrics: list[str]  # the first is shown per seed
    first: list[list[str]] = field(default_factory=list)  # fitted once before (pretraining)
    fashion: bool = False  # reads FashionMNIST from --fashion-root
    gap: bool = False  # adds the last epoch's train/acc, val/acc and their difference
    # Minutes its five seeds took on a 2-core CI machine (Intel Xeon 2.80 GHz, torch 2.14.1).
    minutes: float = float("inf")


def overlay(name: str) -> list[str]:
    return [DEFAULT, f"configs/experiments/{name}.yaml"]


def remedies(*names: str) -> list[str]:
    """The overfitting guide's starting point with some remedies stacked on it."""
    files = {
        "early-stopping": "configs/presets/early-stopping.yaml",
        "ema": "configs/presets/ema.yaml",
    }
    stack = [DEFAULT, "configs/overfitting/few-labels.yaml"]
    return stack + [files.get(name, f"configs/overfitting/{name}.yaml") for name in names]


REMEDIES = [
    "augment",
    "dropout",
    "weight-decay",
    "early-stopping",
    "label-smoothing",
    "mixup",
    "ema",
]


TABLES: dict[str, Table] = {
    "digits": Table(
        "The default run (make fit): digits, test split of 360 images",
        {"default": [DEFAULT]},
        ["test/acc", "test/f1"],
        minutes=4,
    ),
    "transfer": Table(
        "Digits 5-9 from 10 images per class, after pretraining on digits 0-4",
        {
            "from scratch": overlay("digits-5to9-scratch"),
            "feature extraction": overlay("digits-5to9-features"),
            "fine-tuning": overlay("digits-5to9-finetune"),
        },
        ["test/acc", "test/f1"],
        first=[overlay("digits-0to4-pretrain")],
        minutes=2,
    ),
    "longtail": Table(
        "Long-tailed digits (10:1), untouched test split",
        {
            "cross-entropy": overlay("longtail-ce"),
            "class-weighted CE (inverse frequency)": overlay("longtail-weighted-ce"),
            "focal (gamma 2, no alpha)": overlay("longtail-focal"),
            "label smoothing 0.1": overlay("longtail-label-smoothing"),
            "balanced sampler": overlay("longtail-balanced-sampler"),
        },
        ["test/f1", "test/recall_min", "test/acc"],
        minutes=10,
    ),
    "overfitting": Table(
        "Digits with 10 training images per class: each remedy alone, then all together",
        {
            "nothing": remedies(),
            **{f"+ {name}": remedies(name) for name in REMEDIES},
            "all of them": remedies(*REMEDIES),
        },
        ["test/acc", "gap", "train/acc", "val/acc"],
        gap=True,
        minutes=12,  # 45 runs of 12-16 s (docs/results/overfitting/)
    ),
    "fashion": Table(
        "FashionMNIST, official test set of 10,000 images",
        {"fashion-mnist": ["configs/experiments/fashion-mnist.yaml", BF16_CPU]},
        ["test/acc", "test/f1"],
        fashion=True,
        minutes=60,  # five runs of about 12 minutes (seeds 0-2 measured: docs/results/fashion/)
    ),
    "fashion-long": Table(
        "FashionMNIST, the longer CPU recipe",
        {
            "fashion-mnist-long": [
                "configs/experiments/fashion-mnist.yaml",
                "configs/experiments/fashion-mnist-long.yaml",
                BF16_CPU,
            ]
        },
        ["test/acc", "test/f1"],
        fashion=True,
        minutes=300,  # five runs of up to an hour (seed 0 measured: docs/results/fashion-long/)
    ),
    "fashion-best": Table(
        "FashionMNIST, the GPU recipe",
        {"fashion-mnist-best": ["configs/experiments/fashion-mnist-best.yaml"]},
        ["test/acc", "test/f1"],
        fashion=True,  # the GPU recipe: not timed on this CPU
    ),
}


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f} (one run)" if values else "-"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def format_table(table: Table, runs: Sequence[Run], seeds: Sequence[int]) -> str:
    """Per-seed values of the first metric, mean ± std of each metric, seconds per run."""
    first, others = table.metrics[0], table.metrics
    head = [f"seed {s}" for s in seeds] + [f"{m} mean ± std" for m in others] + ["s per run"]
    lines = [
        f"| {first} per seed: config | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
    ]
    for label in table.contenders:
        mine = [run for run in runs if run.contender == label]
        cells = [f"{run.metrics[first]:.4f}" for run in mine]
        cells += [mean_std([run.metrics[m] for run in mine]) for m in others]
        cells.append(f"{statistics.fmean(run.seconds for run in mine):.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_table(
    name: str, table: Table, seeds: Sequence[int], extra: list[str], output: Path
) -> list[Run]:
    folder = output / name
    for stack in table.first:
        # As the README runs it, into logs/<experiment>, where the later configs look.
        fit(["fit", *[arg for config in stack for arg in ("--config", config)], *extra])
    # One repeat over every contender: it rewrites runs.csv after each run with all
    # the runs so far, so an interrupted table keeps every finished row.
    tested = [m for m in table.metrics if m.startswith("test/")]
    stacks = list(table.contenders.values())
    done = repeat(stacks, seed_variants(seeds), extra, tested, folder)
    labels = {label_of(stack): label for label, stack in table.contenders.items()}
    runs = [Run(labels[r.contender], r.name, r.metrics, r.log_dir, seconds=r.seconds) for r in done]
    if table.gap:
        for run in runs:
            run.metrics.update(last_epoch_accuracy(run.log_dir))
        write_tables(folder, runs, table.metrics)
    return runs


def last_epoch_accuracy(log_dir: str | None) -> dict[str, float]:
    """The last epoch's ``train/acc`` and ``val/acc`` as the run logged them, and ``gap``, the
    first minus the second (training accuracy is measured on the augmented batches)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    train, val = (events.Scalars(tag)[-1].value for tag in ("train/acc", "val/acc"))
    return {"train/acc": train, "val/acc": val, "gap": train - val}


def quick_tables() -> list[str]:
    """The tables that run when none is named: five seeds in at most ``QUICK_MINUTES``."""
    return [name for name, table in TABLES.items() if table.minutes <= QUICK_MINUTES]


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.results",
        description=__doc__.split("\n\n")[0],
        epilog="Unknown arguments go to every run.",
        allow_abbrev=False,
    )
    listed = ", ".join(
        f"{name} ({'not timed here' if math.isinf(t.minutes) else f'{t.minutes:.0f} min'})"
        for name, t in TABLES.items()
    )
    parser.add_argument(
        "tables",
        nargs="*",
        help=f"some of {listed}; default: those of at most {QUICK_MINUTES} minutes",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--output", type=Path, default=Path("logs/results"))
    parser.add_argument(
        "--fashion-root",
        default=str(DEBIAN_FASHION) if DEBIAN_FASHION.is_dir() else "data",
        help="FashionMNIST's folder (default: Debian's, where installed, else data)",
    )
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    options, extra = parse_args(sys.argv[1:] if argv is None else argv)
    names = options.tables or quick_tables()
    if unknown := [name for name in names if name not in TABLES]:
        raise SystemExit(f"unknown tables {unknown}; choose from {list(TABLES)}")
    sections = []
    for name in names:
        table = TABLES[name]
        given = (
            [*extra, f"--data.init_args.root={options.fashion_root}"] if table.fashion else extra
        )
        runs = run_table(name, table, options.seeds, given, options.output)
        sections.append(f"### {name}: {table.title}\n\n{format_table(table, runs, options.seeds)}")
        print(f"\n{sections[-1]}\n", flush=True)
    facts = machine_facts()
    command = " ".join(
        ["python -m benchmarks.results", *(argv if argv is not None else sys.argv[1:])]
    )
    where = (
        f"{facts['device']}, {facts['cpus']} CPUs, torch {facts['torch']}, "
        f"lightning {facts.get('lightning')}, {facts['date']}"
    )
    report = "\n\n".join([*sections, f"Command: `{command}`. Measured on {where}."])
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "results.md").write_text(report + "\n")
    print(f"\n{report}\n\n  written to {options.output / 'results.md'}", flush=True)
    return report


if __name__ == "__main__":
    main()
