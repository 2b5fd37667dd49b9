"""Training speed of the precision and speed presets: images/s of a ResNet-18 on a GPU.

    python -m benchmarks.gpu_presets                  # a CUDA machine: 224 px, batch 128
    python -m benchmarks.gpu_presets --variants bf16-mixed,compile
    python -m benchmarks.gpu_presets --smoke          # tiny, on the CPU: checks the script runs

Each variant trains a fresh, randomly initialised torchvision ResNet-18 (1000
classes) through the template's ``ImageClassifier`` and a Lightning
``Trainer`` with the preset's settings, on synthetic uint8 images that are
converted and normalised on the device as ``ImageDataModule`` does. After
``--warmup`` steps (cuDNN autotuning, compilation) it times ``--steps`` steps,
synchronising the GPU at both ends, and reports training images per second and
peak GPU memory. A plain PyTorch loop (same model, optimizer and data; no
Lightning, no metrics) runs first in the same process as the baseline: the
ratio column is variant / plain float32 loop.

The variants are the presets of ``configs/presets/``: ``32-true`` (the
default), ``bf16-mixed``, ``16-mixed``, ``channels-last`` and ``compile`` (both
on bf16-mixed, as they are meant to be used) and ``ddp-1gpu`` (the DDP
strategy on one GPU: its overhead over a single device). ``--smoke`` runs
them all on the CPU with 32 px images, one timed step and the ``eager``
compile backend; there Lightning runs 16-mixed as bf16-mixed, and the figures
mean nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.harness import Row, argument_parser, device_name, finish, quiet_lightning
from project.callbacks.speed import ChannelsLast, TorchCompile
from project.models import ImageClassifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Variant:
    """One preset's Trainer settings: precision, extra callbacks, strategy."""

    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    ddp: bool = False


VARIANTS: dict[str, Variant] = {
    "32-true": Variant(),
    "bf16-mixed": Variant(precision="bf16-mixed"),
    "16-mixed": Variant(precision="16-mixed"),
    "channels-last": Variant(precision="bf16-mixed", channels_last=True),
    "compile": Variant(precision="bf16-mixed", compile=True),
    "ddp-1gpu": Variant(ddp=True),
}


@dataclass
class Settings:
    device: str
    image_size: int
    batch_size: int
    warmup: int
    steps: int
    compile_backend: str


@dataclass
class Result:
    """What one variant measured."""

    name: str
    images_per_second: float
    peak_memory_mib: float
    first_step_seconds: float


class SyntheticBatches(Dataset):
    """The same pre-made uint8 batch, ``length`` times: no decoding, no collation.

    The benchmark measures the training step, so the loader must never be
    the bottleneck; a real data pipeline is what ``benchmarks/`` others measure.
    """

    def __init__(self, batch_size: int, image_size: int, length: int) -> None:
        generator = torch.Generator().manual_seed(0)
        shape = (batch_size, 3, image_size, image_size)
        self.images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        self.targets = torch.randint(0, 1000, (batch_size,), generator=generator)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images, self.targets


def normalize(images: Tensor) -> Tensor:
    """uint8 to float, scaled to 0-1 and standardised, on the images' device."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class SyntheticData(L.LightningDataModule):
    """Synthetic uint8 training batches; the model standardizes them, as the template's does."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.dataset = SyntheticBatches(
            settings.batch_size, settings.image_size, settings.warmup + settings.steps
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, pin_memory=torch.cuda.is_available())


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock(Callback):
    """Times the steps after ``warmup``: from the start of one batch to the end of the last."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = self.ended = math.nan
        self.first_step = math.nan
        self._launch = time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.settings.warmup:
            synchronize(self.settings.device)
            self.started = time.perf_counter()
            if self.settings.device == "cuda":
                torch.cuda.reset_peak_memory_stats()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if idx == 0:
            synchronize(self.settings.device)
            self.first_step = time.perf_counter() - self._launch
        if idx == self.settings.warmup + self.settings.steps - 1:
            synchronize(self.settings.device)
            self.ended = time.perf_counter()


def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as build

    return build(weights=None, num_classes=1000)


def sgd(parameters: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4)


def peak_memory(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else math.nan


def run_lightning(name: str, settings: Settings) -> Result:
    """Trains one variant through ImageClassifier and the Trainer; returns its figures."""
    variant = VARIANTS[name]
    torch.manual_seed(0)
    model = ImageClassifier(
        net=resnet18(), num_classes=1000, optimizer=sgd, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    clock = StepClock(settings)
    callbacks: list[Callback] = [clock]
    if variant.channels_last:
        callbacks.append(ChannelsLast())
    if variant.compile:
        callbacks.append(TorchCompile(backend=settings.compile_backend))
    trainer = L.Trainer(
        accelerator="gpu" if settings.device == "cuda" else "cpu",
        devices=1,
        strategy="ddp" if variant.ddp else "auto",
        precision=variant.precision,
        max_steps=settings.warmup + settings.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=SyntheticData(settings))
    if variant.compile:
        torch._dynamo.reset()  # the next variant compiles nothing it did not ask for
    if variant.ddp and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    seconds = clock.ended - clock.started
    return Result(
        name,
        settings.steps * settings.batch_size / seconds,
        peak_memory(settings.device),
        clock.first_step,
    )


def run_plain(settings: Settings) -> Result:
    """The baseline: the same model, optimizer and data in a plain float32 PyTorch loop."""
    device = torch.device(settings.device)
    torch.manual_seed(0)
    net = resnet18().to(device)
    optimizer = sgd(net.parameters())
    loss_fn = nn.CrossEntropyLoss()
    batches = DataLoader(
        SyntheticData(settings).dataset, batch_size=None, pin_memory=device.type == "cuda"
    )
    net.train()
    launched = time.perf_counter()
    first_step = started = math.nan
    for index, (images, targets) in enumerate(batches):
        if index == settings.warmup:
            synchronize(settings.device)
            started = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
        images = normalize(images.to(device, non_blocking=True))
        targets = targets.to(device, non_blocking=True)
        loss = loss_fn(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index == 0:
            synchronize(settings.device)
            first_step = time.perf_counter() - launched
    synchronize(settings.device)
    seconds = time.perf_counter() - started
    return Result(
        "plain PyTorch 32-true",
        settings.steps * settings.batch_size / seconds,
        peak_memory(settings.device),
        first_step,
    )


def settings_from(args: Any) -> Settings:
    if args.smoke:
        # The CPU, tiny images, two timed steps; "eager" traces through
        # torch.compile without the minutes inductor takes on a CPU.
        return Settings("cpu", 32, 2, warmup=1, steps=1, compile_backend="eager")
    if not torch.cuda.is_available():
        raise SystemExit(
            "gpu_presets.py measures GPU presets and found no CUDA device; "
            "use --smoke for a CPU check of the script"
        )
    return Settings("cuda", args.image_size, args.batch_size, args.warmup, args.steps, "inductor")


def rows(results: list[Result], baseline: Result, settings: Settings) -> list[Row]:
    """One table row per variant: images/s against the plain float32 loop."""
    measure = f"images/s, {settings.image_size} px, batch {settings.batch_size}"
    note = (
        "ResNet-18 trained on synthetic data; baseline: a plain PyTorch float32 loop in the "
        "same process; ratio > 1 is faster. compile and channels-last run on bf16-mixed."
    )
    return [
        Row(
            benchmark=f"preset {result.name}",
            measure=measure,
            unit="images/s",
            template=result.images_per_second,
            baseline=baseline.images_per_second,
            note=note if index == 0 else "",
        )
        for index, result in enumerate(results)
    ]


def print_details(results: list[Result], baseline: Result, settings: Settings) -> None:
    print(f"device: {device_name()}  ({settings.device}, torch {torch.__version__})")
    print(f"{'variant':<24}{'images/s':>12}{'x plain':>10}{'peak MiB':>12}{'to 1st step s':>14}")
    for result in [baseline, *results]:
        ratio = result.images_per_second / baseline.images_per_second
        memory = f"{result.peak_memory_mib:.0f}" if math.isfinite(result.peak_memory_mib) else "-"
        print(
            f"{result.name:<24}{result.images_per_second:>12.1f}{ratio:>10.2f}"
            f"{memory:>12}{result.first_step_seconds:>14.2f}"
        )


def main(argv: Sequence[str] | None = None) -> list[Result]:
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    if unknown := [name for name in names if name not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    settings = settings_from(args)
    with quiet_lightning():
        if settings.device == "cuda":
            torch.backends.cudnn.benchmark = True
        baseline = run_plain(settings)
        results = [run_lightning(name, settings) for name in names]
        print_details(results, baseline, settings)
        finish(rows(results, baseline, settings), args)
    return results


if __name__ == "__main__":
    main()
