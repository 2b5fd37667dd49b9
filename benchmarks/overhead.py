"""Trainer overhead: the template's fit loop against a hand-written PyTorch loop.

Both sides train the default config's network (``configs/default.yaml``: the
ConvNet, its optimizer, its OneCycle schedule, its loss) on the same in-memory
batches of the digits for the same number of steps, validating and keeping
checkpoints every epoch. The template side is ``ImageClassifier`` + ``Trainer``
as the default config builds them, with its callbacks (checkpoints, early
stopping, learning-rate monitor) and TensorBoard logging; only the progress bar
is off. The two run alternately; the table gives the median time per epoch.

A second pair of sides splits that ratio: the smallest LightningModule that
trains the same network the same way (no logging, metrics, callbacks or
checkpoints: what Lightning's own parity tests time) against the plain loop
without its checkpoints. Their ratio is what Lightning's loop costs; the rest
of the first ratio is what the default config's features cost.

    python -m benchmarks.overhead [--epochs 6] [--rounds 5]
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn

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
    cli = build_cli(
        config,
        [
            f"--trainer.max_epochs={epochs}",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={logs}",
        ],
    )
    # The batches are standardized already, as the plain loop's are: the model's own
    # standardization (the same two operations per batch) is left to do nothing.
    cli.model.set_input_statistics([0.0], [1.0])
    clock = EpochClock()
    cli.trainer.callbacks.append(clock)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, train_dataloaders=train, val_dataloaders=val)
    return clock.stamps, time.perf_counter() - start


def plain_run(
    config: str,
    epochs: int,
    train: InMemoryBatches,
    val: InMemoryBatches,
    logs: Path | None,
) -> tuple[list[float], float]:
    """One hand-written fit of the same network, optimizer, schedule and loss.

    With ``logs`` set to ``None`` it keeps no checkpoints.
    """
    cli = build_cli(config)  # the same seed, so the same initial weights
    device = cli.trainer.strategy.root_device
    model = cli.model
    net = model.net.to(device)
    optimizer = model.optimizer(plain_loop.decay_groups(net))
    scheduler = plain_loop.build_scheduler(model.scheduler, optimizer, epochs * len(train))
    start = time.perf_counter()
    stamps = plain_loop.fit(
        net,
        train,
        val,
        model.loss,
        optimizer,
        scheduler,
        device,
        epochs,
        None if logs is None else logs / "plain",
    )
    return stamps, time.perf_counter() - start


class LightningAlone(L.LightningModule):
    """The plain loop's work in the smallest LightningModule: no logging, metrics or callbacks.

    Validation sums the loss and the correct predictions as the plain loop's
    ``evaluate`` does; nothing reads them.
    """

    def __init__(self, net: nn.Module, loss: nn.Module, optimizer: Any, scheduler: Any) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.val_loss, self.val_correct = 0.0, 0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        return self.loss(self.net(images), targets)

    def on_validation_epoch_start(self) -> None:
        self.val_loss, self.val_correct = 0.0, 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self.net(images)
        self.val_loss += self.loss(logits, targets).item() * len(targets)
        self.val_correct += (logits.argmax(dim=1) == targets).sum().item()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(plain_loop.decay_groups(self.net))
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = plain_loop.build_scheduler(self.scheduler, optimizer, total_steps)
        if scheduler is None:
            return optimizer
        interval = "step" if isinstance(scheduler, plain_loop.PER_BATCH) else "epoch"
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }


def lightning_run(
    config: str, epochs: int, train: InMemoryBatches, val: InMemoryBatches, logs: Path | None
) -> tuple[list[float], float]:
    """One fit of :class:`LightningAlone` by a Trainer with every extra turned off.

    ``logs`` is not used: this side writes nothing.
    """
    cli = build_cli(config)  # the same seed, so the same initial weights
    model = cli.model
    module = LightningAlone(model.net, model.loss, model.optimizer, model.scheduler)
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=cli.trainer.accelerator,
        devices=1,
        precision=cli.trainer.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    return clock.stamps, time.perf_counter() - start


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

        def run(side, keep_checkpoints=True):
            folder = logs if keep_checkpoints else None
            return lambda: side(config, epochs, train_batches, val_batches, folder)

        sides = {
            "template": run(template_run),
            "plain": run(plain_run),
            "lightning": run(lightning_run, keep_checkpoints=False),
            "plain, no checkpoints": run(plain_run, keep_checkpoints=False),
        }
        if warm_up:  # one untimed run each: imports and allocator warm-up are not overhead
            alternate(sides, 1)
        results = alternate(sides, rounds)
    per_epoch = {
        side: median([d for stamps, _ in runs for d in steady_epochs(stamps)])
        for side, runs in results.items()
    }
    whole = {side: median([total for _, total in runs]) for side, runs in results.items()}
    steps = len(train)
    extra = per_epoch["template"] - per_epoch["plain"]
    ratio = per_epoch["template"] / per_epoch["plain"]
    loop_extra = per_epoch["lightning"] - per_epoch["plain, no checkpoints"]
    note = (
        f"{steps} training steps of batch {len(train[0][1])} and {len(val)} validation batches "
        f"per epoch, {epochs} epochs x {rounds} alternating rounds; the template adds "
        f"{extra * 1000:+.0f} ms per epoch ({extra / steps * 1000:+.2f} ms per step): "
        "metrics, logging, callbacks and Lightning's loop"
    )
    loop_note = (
        "a LightningModule with only training_step, validation_step and "
        "configure_optimizers, a Trainer with logger, checkpoints, callbacks, progress bar "
        "and model summary off, against the plain loop without its checkpoints: "
        f"Lightning's loop adds {loop_extra * 1000:+.0f} ms per epoch (its own parity tests "
        "allow 50 ms); the template's other "
        f"{(extra - loop_extra) * 1000:+.0f} ms are the default config's features"
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
        Row(
            "trainer overhead",
            "Lightning alone: time per epoch, no logging, metrics or checkpoints",
            "s",
            per_epoch["lightning"],
            per_epoch["plain, no checkpoints"],
            note=loop_note,
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
