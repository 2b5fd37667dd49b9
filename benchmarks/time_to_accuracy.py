"""Time to accuracy and peak memory of the default run, against a plain PyTorch script.

The template side is the command a user runs, ``python -m project fit --config
configs/default.yaml``, in a fresh process, stopped when the validation
accuracy first reaches the target (99 %). The baseline is
``benchmarks/plain_loop.py`` in a fresh process: the same network, optimizer,
schedule, loss, seed, batch size and training transform, on the same
train/validation split of the same image files, decoded with torchvision and
trained by a hand-written loop. Both clocks start at process launch, so
start-up, decoding and every epoch count. The two run alternately; the table
gives medians, and each process's peak resident memory.

    python -m benchmarks.time_to_accuracy [--target 0.99] [--repeats 3]
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from benchmarks.harness import (
    EpochClock,
    Finished,
    Row,
    alternate,
    argument_parser,
    build_cli,
    child_environment,
    finish,
    median,
    quiet_lightning,
    run_measured,
)

GOAL = 1.2
# Tiny runs for --smoke: any accuracy counts, two batches, one epoch.
SMOKE_LIMITS = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2}


class StopAtAccuracy(EpochClock):
    """Ends fit once ``val/acc`` reaches ``target``; writes when that happened to ``clock``.

    Args:
        target: Validation accuracy (0-1) that ends the run.
        clock: JSON file that gets ``reached_at`` (``time.time()``, or null), the
            epochs run, the best accuracy and each epoch's seconds.
    """

    def __init__(self, target: float, clock: str) -> None:
        super().__init__(clock)
        self.target = target
        self.progress: dict[str, Any] = {"reached_at": None, "epochs": 0, "best_acc": 0.0}

    def record(self) -> dict[str, Any]:
        return {**self.progress, **super().record()}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        accuracy = float(trainer.callback_metrics.get("val/acc", math.nan))
        self.progress["epochs"] = trainer.current_epoch + 1
        self.progress["best_acc"] = max(self.progress["best_acc"], accuracy)
        if accuracy >= self.target and self.progress["reached_at"] is None:
            self.progress["reached_at"] = time.time()
            trainer.should_stop = True


def plain_spec(config: str, target: float, workdir: Path, limits: dict[str, int]) -> Path:
    """What the plain script needs to train as the config does, saved for it to load.

    The split, normalization and transforms come from the config's DataModule
    (the files themselves are read again by the plain script); the network,
    loss, optimizer and schedule as the config names them.
    """
    cli = build_cli(config, [f"--trainer.{key}={value}" for key, value in limits.items()])
    data = cli.datamodule
    data.prepare_data()
    data.setup("fit")
    model = cli.config["model"]["init_args"]
    net = model["net"].as_dict()
    net["init_args"] = {
        **net.get("init_args", {}),
        "num_classes": data.num_classes,
        "in_channels": data.channels,
    }

    def as_dict(value: Any) -> dict[str, Any] | None:
        return None if value is None else value.as_dict()

    spec = {
        "seed": cli.config["seed_everything"],
        "device": cli.trainer.strategy.root_device.type,
        "max_epochs": cli.trainer.max_epochs,
        "limit_train_batches": limits.get("limit_train_batches"),
        "limit_val_batches": limits.get("limit_val_batches"),
        "target": target,
        "batch_size": data.batch_size,
        "num_workers": data.num_workers,
        "channels": data.channels,
        "mean": data.training_statistics()[0],
        "std": data.training_statistics()[1],
        "train_transform": data.train_transform(),
        "eval_transform": data.eval_transform(),
        "net": net,
        "loss": as_dict(model.get("loss")),
        "optimizer": as_dict(model["optimizer"]),
        "scheduler": as_dict(model.get("scheduler")),
        "checkpoint_dir": str(workdir / "plain-checkpoints"),
    }
    for split in ("train", "val"):
        spec[f"{split}_paths"] = data.datasets[split].paths
        spec[f"{split}_targets"] = data.datasets[split].targets
    path = workdir / "plain-spec.pt"
    torch.save(spec, path)
    return path


def template_command(config: str, target: float, clock: Path, logs: Path, limits: dict) -> list:
    stop = {
        # Named in full: run with -m, this module is __main__ here.
        "class_path": "benchmarks.time_to_accuracy.StopAtAccuracy",
        "init_args": {"target": target, "clock": str(clock)},
    }
    return [
        sys.executable,
        *("-m", "project", "fit", "--config", config),
        "--test_after_fit=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={logs}",
        f"--trainer.callbacks+={json.dumps(stop)}",
        *(f"--trainer.{key}={value}" for key, value in limits.items()),
    ]


def timed(command: list[str], clock: Path) -> dict[str, Any]:
    """Runs one side; seconds from launch to the target (NaN if never reached) and more."""
    clock.unlink(missing_ok=True)
    finished: Finished = run_measured(command, env=child_environment())
    record = json.loads(clock.read_text())
    reached = record["reached_at"]
    record["seconds"] = math.nan if reached is None else reached - finished.started
    record["peak_rss_mib"] = finished.peak_rss_mib
    return record


def measure(config: str, target: float, repeats: int, limits: dict[str, int]) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        spec = plain_spec(config, target, workdir, limits)
        clocks = {side: workdir / f"{side}-clock.json" for side in ("template", "plain")}
        template = template_command(config, target, clocks["template"], workdir / "logs", limits)
        plain = [
            *(sys.executable, "-m", "benchmarks.plain_loop"),
            *("--spec", str(spec), "--clock", str(clocks["plain"])),
        ]
        results = alternate(
            {
                "template": lambda: timed(template, clocks["template"]),
                "plain": lambda: timed(plain, clocks["plain"]),
            },
            repeats,
        )
    seconds = {side: median([r["seconds"] for r in runs]) for side, runs in results.items()}
    peak = {side: median([r["peak_rss_mib"] for r in runs]) for side, runs in results.items()}
    epoch_seconds = {
        side: median([s for r in runs for s in r["epoch_seconds"]])
        for side, runs in results.items()
    }
    last = {side: runs[-1] for side, runs in results.items()}
    reached = (
        f"the template reached {target:.0%} after {last['template']['epochs']} epochs, "
        f"the plain loop after {last['plain']['epochs']}"
    )
    for side in ("template", "plain"):
        if last[side]["reached_at"] is None:
            reached += f"; {side} never reached it (best {last[side]['best_acc']:.4f})"
    ratio = seconds["template"] / seconds["plain"]
    return [
        Row(
            "time to accuracy",
            f"`fit --config {config}` to {target:.0%} val acc",
            "s",
            seconds["template"],
            seconds["plain"],
            goal=f"<= {GOAL:.1f}x",
            met=ratio <= GOAL if math.isfinite(ratio) else None,
            note=f"wall time from launch, start-up included; {reached}; "
            f"{repeats} alternating runs, median",
        ),
        Row(
            "time to accuracy",
            "time per epoch, files and transforms included",
            "s",
            epoch_seconds["template"],
            epoch_seconds["plain"],
        ),
        Row(
            "peak memory",
            "peak RSS of the same runs",
            "MiB",
            peak["template"],
            peak["plain"],
            note="resident memory of the whole process at its peak (getrusage ru_maxrss); "
            "the plain side imports only torch and torchvision",
        ),
    ]


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--target", type=float, default=0.99, help="validation accuracy, 0-1")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side")
    args = parser.parse_args(argv)
    with quiet_lightning():
        if args.smoke:
            rows = measure(args.config, 0.0, 1, SMOKE_LIMITS)
        else:
            rows = measure(args.config, args.target, args.repeats, {})
        finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
