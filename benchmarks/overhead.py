"""Trainer overhead: the template's fit loop against a hand-written PyTorch loop.

Both sides train the default config's network (``configs/default.yaml``: the
ConvNet, its optimizer, its OneCycle schedule, its loss) on the same in-memory
batches of the digits for the same number of steps, validating and keeping
checkpoints every epoch. The template side is ``ImageClassifier`` + ``Trainer``
as the default config builds them, with its callbacks (checkpoints, early
stopping, learning-rate monitor) and TensorBoard logging; only the progress bar
is off. The two run alternately; the table gives the median time per epoch.

    python -m benchmarks.overhead [--epochs 6] [--rounds 5]
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from benchmarks import plain_loop
from benchmarks.harness import (
    EpochClock,
    Row,
    alternate,
    argument_parser,
    build_cli,
    finish,
    median,
    quiet_lightning,
)

GOAL = 1.05


class InMemoryBatches:
    """A fixed list of batches that both sides iterate, every epoch in the same order."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def digits_batches(
    batch_size: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
    """The digits, split as the default config splits them in size, normalized, in batches."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # As the default writes them to disk: 0-16 ink levels spread over 0-255.
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).float().round().unsqueeze(1) / 255.0
    targets = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    val_count = round(len(order) * val_fraction)
    train_count = len(order) - val_count - round(len(order) * test_fraction)
    train, val = order[:train_count], order[train_count : train_count + val_count]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std

    def batched(indices: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [
            (images[part].contiguous(), targets[part].contiguous())
            for part in indices.split(batch_size)
        ]

    return batched(train), batched(val)


def template_run(
    config: str, epochs: int, train: InMemoryBatches, val: InMemoryBatches, logs: Path
) -> tuple[list[float], float]:
    """One template fit: the epoch stamps and the whole ``fit()`` time."""
    from project.callbacks import TrainingImageGrid

    cli = build_cli(
        config,
        [
            f"--trainer.max_epochs={epochs}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={logs}",
        ],
    )
    # The grid of augmented images draws from a datamodule, which these in-memory
    # batches replace; it runs once, before the first epoch, outside the times.
    cli.trainer.callbacks[:] = [
        c for c in cli.trainer.callbacks if not isinstance(c, TrainingImageGrid)
    ]
    clock = EpochClock()
    cli.trainer.callbacks.append(clock)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, train_dataloaders=train, val_dataloaders=val)
    return clock.stamps, time.perf_counter() - start


def plain_run(
    config: str, epochs: int, train: InMemoryBatches, val: InMemoryBatches, logs: Path
) -> tuple[list[float], float]:
    """One hand-written fit of the same network, optimizer, schedule and loss."""
    cli = build_cli(config)  # the same seed, so the same initial weights
    device = cli.trainer.strategy.root_device
    model = cli.model
    net = model.net.to(device)
    optimizer = model.optimizer(plain_loop.decay_groups(net))
    scheduler = plain_loop.build_scheduler(model.scheduler, optimizer, epochs * len(train))
    start = time.perf_counter()
    stamps = plain_loop.fit(
        net, train, val, model.loss, optimizer, scheduler, device, epochs, logs / "plain"
    )
    return stamps, time.perf_counter() - start


def steady_epochs(stamps: list[float]) -> list[float]:
    """Epoch durations without the first (it pays for lazy set-up on both sides)."""
    durations = [b - a for a, b in itertools.pairwise(stamps)]
    return durations[1:] if len(durations) > 1 else durations


def measure(
    config: str, epochs: int, rounds: int, limit_batches: int | None = None, warm_up: bool = True
) -> list[Row]:
    probe = build_cli(config)
    data = probe.datamodule
    train, val = digits_batches(
        data.batch_size, data.val_fraction, data.test_fraction, probe.config["seed_everything"]
    )
    if limit_batches is not None:
        train, val = train[:limit_batches], val[:limit_batches]
    train_batches, val_batches = InMemoryBatches(train), InMemoryBatches(val)
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)

        def run(side):
            return lambda: side(config, epochs, train_batches, val_batches, logs)

        if warm_up:  # one untimed run each: imports and allocator warm-up are not overhead
            alternate({"template": run(template_run), "plain": run(plain_run)}, 1)
        results = alternate({"template": run(template_run), "plain": run(plain_run)}, rounds)
    per_epoch = {
        side: median([d for stamps, _ in runs for d in steady_epochs(stamps)])
        for side, runs in results.items()
    }
    whole = {side: median([total for _, total in runs]) for side, runs in results.items()}
    steps = len(train)
    extra = per_epoch["template"] - per_epoch["plain"]
    ratio = per_epoch["template"] / per_epoch["plain"]
    note = (
        f"{steps} training steps of batch {len(train[0][1])} and {len(val)} validation batches "
        f"per epoch, {epochs} epochs x {rounds} alternating rounds; the template adds "
        f"{extra * 1000:+.0f} ms per epoch ({extra / steps * 1000:+.2f} ms per step): "
        "metrics, logging, callbacks and Lightning's loop"
    )
    return [
        Row(
            "trainer overhead",
            "time per epoch (train + val + checkpoint)",
            "s",
            per_epoch["template"],
            per_epoch["plain"],
            goal=f"<= {GOAL:.2f}x",
            met=ratio <= GOAL if math.isfinite(ratio) else None,
            note=note,
        ),
        Row(
            "trainer overhead",
            f"fit() of {epochs} epochs, set-up included",
            "s",
            whole["template"],
            whole["plain"],
        ),
    ]


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per fit")
    parser.add_argument("--rounds", type=int, default=5, help="alternating fits of each side")
    args = parser.parse_args(argv)
    with quiet_lightning():
        if args.smoke:
            rows = measure(args.config, epochs=2, rounds=1, limit_batches=3, warm_up=False)
        else:
            rows = measure(args.config, args.epochs, args.rounds)
        finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
