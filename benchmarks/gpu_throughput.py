"""GPU training throughput: ResNet-18 and ResNet-50 through the template and a plain loop.

Synthetic 224 px batches already on the GPU (the input pipeline is measured in
``dataloading.py``), bf16-mixed precision, channels-last memory order, eager and
``torch.compile``d. The template side is ``ImageClassifier`` + ``Trainer`` with
the project's ``ChannelsLast`` and ``TorchCompile`` callbacks (what the
``bf16-mixed``, ``channels-last`` and ``compile`` presets switch on) and its
metrics; the plain side is a hand-written loop with ``torch.autocast``. No
logger: it writes every 50 steps, and the per-step cost of the template's
logging and callbacks is what ``overhead.py`` measures. Warm-up steps (and the
compilation, which happens in them) are not timed; the two sides run
alternately and the table gives the median images per second.

    python -m benchmarks.gpu_throughput [--models resnet18 resnet50] [--steps 30]

About 3-4 minutes on an H100 for the eight measurements, most of it compiling.
``--smoke`` runs a few tiny steps on whatever device there is (a CPU too).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Sequence

import lightning.pytorch as L
import torch
import torchvision
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks import plain_loop
from benchmarks.harness import (
    Report,
    Row,
    alternate,
    argument_parser,
    device_name,
    finish,
    machine_facts,
    median,
    quiet_lightning,
    write_report,
)
from project.callbacks.speed import ChannelsLast, TorchCompile
from project.models import ImageClassifier

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
}
MODES = ("eager", "compiled")
RATIO_GOAL = 0.98
# The goal for ResNet-50 in bf16, stated for an H100 (an H200 should pass too).
RESNET50_GOAL = 3000.0
NUM_CLASSES = 1000


def optimizer_factory() -> Callable[..., torch.optim.Optimizer]:
    """SGD with momentum and weight decay, the usual ResNet recipe; the same on both sides."""
    return functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9, weight_decay=1e-4)


class RepeatedBatch:
    """One batch yielded ``length`` times: data cost nothing, so only training is timed."""

    def __init__(self, batch: tuple[Tensor, Tensor], length: int) -> None:
        self.batch = batch
        self.length = length

    def __iter__(self):
        return (self.batch for _ in range(self.length))

    def __len__(self) -> int:
        return self.length


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock(Callback):
    """Times steps ``warmup`` to ``warmup + steps - 1``; waits for the GPU at both ends."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup = warmup
        self.steps = steps
        self.seconds = math.nan
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            synchronize(pl_module.device)
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup + self.steps - 1:
            synchronize(pl_module.device)
            self.seconds = time.perf_counter() - self._start


def template_side(
    name: str, compiled: bool, backend: str, batch: tuple[Tensor, Tensor], warmup: int, steps: int
) -> Callable[[], float]:
    """A function that runs one template fit and returns its images per second."""
    net = MODELS[name](num_classes=NUM_CLASSES)
    # The batch is float already, as the plain side's: the model's standardization
    # (two operations per batch) is left to do nothing.
    model = ImageClassifier(
        net, NUM_CLASSES, optimizer=optimizer_factory(), mean=[0.0] * 3, std=[1.0] * 3
    )
    accelerator = "gpu" if batch[0].is_cuda else "cpu"

    def run() -> float:
        clock = StepClock(warmup, steps)
        callbacks: list[Callback] = [ChannelsLast(), clock]
        if compiled:
            callbacks.append(TorchCompile(backend=backend))
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            precision="bf16-mixed",
            max_steps=warmup + steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            benchmark=True,
            logger=False,
            callbacks=callbacks,
        )
        trainer.fit(model, train_dataloaders=RepeatedBatch(batch, warmup + steps))
        return steps * len(batch[1]) / clock.seconds

    return run


def plain_side(
    name: str, compiled: bool, backend: str, batch: tuple[Tensor, Tensor], warmup: int, steps: int
) -> Callable[[], float]:
    """A function that runs the hand-written loop once and returns its images per second."""
    images, targets = batch
    device = images.device
    net = MODELS[name](num_classes=NUM_CLASSES).to(device, memory_format=torch.channels_last)
    if compiled:
        net.compile(backend=backend, mode="default" if backend == "inductor" else None)

    def run() -> float:
        net.train()
        optimizer = optimizer_factory()(plain_loop.decay_groups(net))
        for step in range(warmup + steps):
            if step == warmup:
                synchronize(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = F.cross_entropy(net(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        return steps * len(targets) / (time.perf_counter() - start)

    return run


def log(message: str, began: float) -> None:
    # Progress on stderr: a run cut short by a time limit still shows how far it got.
    print(f"[{time.perf_counter() - began:6.1f} s] {message}", file=sys.stderr, flush=True)


def measure(
    models: Sequence[str],
    modes: Sequence[str],
    batch_size: int,
    image_size: int,
    warmup: int,
    steps: int,
    rounds: int,
    backend: str,
    checkpoint: Callable[[list[Row]], None] = lambda rows: None,
) -> list[Row]:
    began = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator)
    batch = (images.to(device).contiguous(memory_format=torch.channels_last), targets.to(device))
    gpu = device_name()
    fast_gpu = any(name in gpu for name in ("H100", "H200"))
    rows: list[Row] = []
    for name in models:
        for mode in modes:
            compiled = mode == "compiled"
            log(f"{name} {mode}: building both sides", began)
            sides = {
                "template": template_side(name, compiled, backend, batch, warmup, steps),
                "plain": plain_side(name, compiled, backend, batch, warmup, steps),
            }
            results = alternate(sides, rounds)
            rates = {side: median(values) for side, values in results.items()}
            log(f"{name} {mode}: {rates['template']:.0f} vs {rates['plain']:.0f} images/s", began)
            ratio = rates["template"] / rates["plain"]
            goal = f">= {RATIO_GOAL:.2f}x"
            met = ratio >= RATIO_GOAL if math.isfinite(ratio) else None
            if name == "resnet50":
                goal += f", >= {RESNET50_GOAL:,.0f}/s on H100"
                if fast_gpu and met is not None:
                    met = met and rates["template"] >= RESNET50_GOAL
            note = ""
            if not rows:
                note = (
                    f"on {gpu}; batch {batch_size} of {image_size} px, bf16-mixed, channels_last; "
                    f"{steps} timed steps after {warmup} warm-up steps (compilation happens in "
                    f"these), {rounds} alternating rounds, median"
                )
            rows.append(
                Row(
                    "GPU throughput",
                    f"{name} {mode}",
                    "images/s",
                    rates["template"],
                    rates["plain"],
                    goal=goal,
                    met=met,
                    note=note,
                )
            )
            checkpoint(rows)
            del sides
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per run")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    parser.add_argument(
        "--backend", default="inductor", help="torch.compile backend (eager: trace only)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        # Tiny and compile-free (the eager backend still traces with dynamo).
        args.batch_size, args.image_size, args.warmup, args.steps, args.rounds = 4, 32, 1, 2, 1
        args.backend = "eager"
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or with --smoke to check the script")
    with quiet_lightning():

        def checkpoint(rows: list[Row]) -> None:
            # Rows so far, in case a time limit ends the run before the table prints.
            if args.json is not None:
                write_report(Report(list(rows), machine_facts()), args.json)

        rows = measure(
            args.models,
            args.modes,
            args.batch_size,
            args.image_size,
            args.warmup,
            args.steps,
            args.rounds,
            args.backend,
            checkpoint,
        )
        finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
