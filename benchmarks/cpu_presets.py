"""What each preset that runs on a CPU changes: time per epoch, peak memory, test accuracy.

Each preset is stacked on the default config, as the README shows, and run as
the command a user types, ``python -m project fit --config configs/default.yaml
--config configs/presets/<preset>.yaml``, for ``--epochs`` epochs in a fresh
process. The baseline is the default config alone, run before the first preset
and again after every ``--every`` presets, so drift on the machine reaches both
sides; its figures are the medians of those runs. Not part of ``make bench``
(it takes about ten minutes); run it on a quiet machine:

    python -m benchmarks.cpu_presets [--epochs 10] [--only ema compile]

Left out: the presets that need CUDA, those that change what an epoch is
(``fast-dev-run``, ``overfit``, ``limit-batches``) and ``ensemble``, which is
not for fit.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    REPO,
    Row,
    argument_parser,
    child_environment,
    finish,
    median,
    run_measured,
)

PRESETS = REPO / "configs" / "presets"
NOT_AN_EPOCH = {"fast-dev-run", "overfit", "limit-batches"}
# Test and predict only: its members are checkpoints that other runs trained.
NOT_FOR_FIT = {"ensemble"}
# Presets whose callback is the progress bar: their runs keep it on (the others
# turn Lightning's bar off).
OWN_PROGRESS_BAR = {"log-lines"}


def cpu_presets() -> list[str]:
    """The presets that run on a CPU and keep the meaning of an epoch, by file name."""
    names = []
    for path in sorted(PRESETS.glob("*.yaml")):
        needs_gpu = re.search(r"^# needs: \d+ CUDA GPUs?$", path.read_text(), re.MULTILINE)
        if not needs_gpu and path.stem not in NOT_AN_EPOCH | NOT_FOR_FIT:
            names.append(path.stem)
    return names


def run(preset: str | None, epochs: int, workdir: Path, limits: Sequence[str]) -> dict[str, Any]:
    """One fit of the default config (plus ``preset``); its epoch times, memory and accuracy."""
    clock = workdir / "clock.json"
    clock.unlink(missing_ok=True)
    callback = {
        "class_path": "benchmarks.harness.EpochClock",
        "init_args": {"clock": str(clock)},
    }
    command = [sys.executable, "-m", "project", "fit", "--config", "configs/default.yaml"]
    if preset is not None:
        command += ["--config", f"configs/presets/{preset}.yaml"]
    command.append(f"--trainer.max_epochs={epochs}")
    if preset not in OWN_PROGRESS_BAR:
        command.append("--trainer.enable_progress_bar=false")
    command += [
        f"--trainer.logger.init_args.save_dir={workdir / 'logs'}",
        f"--trainer.callbacks+={json.dumps(callback)}",
        *limits,
    ]
    # Run from the repository root (configs/ and data/ are named from there).
    finished = run_measured(command, env=child_environment())
    seconds = json.loads(clock.read_text())["epoch_seconds"]
    accuracy = re.search(r"^\s*test accuracy\s+(\S+)$", finished.output, re.MULTILINE)
    return {
        "first": seconds[0],
        # The first epoch carries one-off costs (compiling, warming caches).
        "epoch": median(seconds[1:] or seconds),
        "peak_rss_mib": finished.peak_rss_mib,
        "test_acc": float(accuracy.group(1)) if accuracy else math.nan,
    }


def measure(
    presets: Sequence[str], epochs: int, every: int, limits: Sequence[str], closing: bool = True
) -> list[Row]:
    baseline: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for index, preset in enumerate(presets):
            if index % every == 0:
                baseline.append(run(None, epochs, workdir, limits))
            print(f"  {preset} ...", file=sys.stderr, flush=True)
            results[preset] = run(preset, epochs, workdir, limits)
        if closing:  # the default once more at the end, so drift reaches both sides
            baseline.append(run(None, epochs, workdir, limits))
    default = {key: median([b[key] for b in baseline]) for key in baseline[0]}
    spread = [b["epoch"] for b in baseline]
    # How much the same run varies here: differences inside this range are noise.
    default_note = (
        f"default alone, {len(spread)} runs: {min(spread):.2f}-{max(spread):.2f} s per epoch"
    )
    rows = []
    for preset, result in results.items():
        note = (
            f"first epoch {result['first']:.2f} s (default {default['first']:.2f}); "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB (default {default['peak_rss_mib']:.0f}); "
            f"test accuracy {result['test_acc']:.4f} (default {default['test_acc']:.4f})"
        )
        if preset == "ddp-cpu":
            note += "; RSS of the first of its two processes"
        if not rows:
            note += f"; {default_note}"
        rows.append(
            Row(
                f"preset {preset}",
                f"time per epoch, {epochs} epochs",
                "s",
                result["epoch"],
                default["epoch"],
                note=note,
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run")
    parser.add_argument("--every", type=int, default=5, help="presets between default runs")
    parser.add_argument("--only", nargs="+", help="just these presets (file names)")
    args = parser.parse_args(argv)
    available = cpu_presets()
    unknown = sorted(set(args.only or []) - set(available))
    if unknown:
        parser.error(f"not a CPU preset here: {unknown}; choose from {available}")
    if args.smoke:
        limits = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]
        limits += ["--trainer.limit_test_batches=2"]
        rows = measure(args.only or ["deterministic"], 2, 5, limits, closing=False)
    else:
        rows = measure(args.only or available, args.epochs, args.every, [])
    finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
