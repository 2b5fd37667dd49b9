"""The plain PyTorch baseline: a hand-written training loop, no Lightning.

The benchmarks compare the template against this loop. It does what a careful
hand-written script does for the same job, and no more: train with the given
optimizer and schedule, validate every epoch (loss and accuracy), keep the best
and the last checkpoint.

Run as a script (``python -m benchmarks.plain_loop --spec SPEC --clock CLOCK``)
it trains the default config's network on the default config's split, as
``benchmarks/time_to_accuracy.py`` prepares it, and records when the validation
accuracy first reaches the target. It imports only torch and torchvision, so its
start-up is that of a plain script.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]

Batches = Iterable[tuple[Tensor, Tensor]]
# Schedulers meant to step after every batch (the template treats the same two so).
PER_BATCH = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


def decay_groups(net: nn.Module) -> list[dict[str, Any]]:
    """Weights decay; biases and norm scales do not (as the template's optimizer groups)."""
    parameters = [p for p in net.parameters() if p.requires_grad]
    return [
        {"params": [p for p in parameters if p.ndim > 1]},
        {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_scheduler(
    factory: Callable[..., Any] | None, optimizer: torch.optim.Optimizer, total_steps: int
) -> Any:
    """The schedule from ``factory``; OneCycleLR's ``total_steps`` is the run's length."""
    if factory is None:
        return None
    given = getattr(factory, "keywords", {})
    # A config's callable is a partial with every argument filled (None where unset).
    wants_length = "total_steps" in given or "total_steps" in inspect.signature(factory).parameters
    if wants_length and given.get("total_steps") is None and given.get("epochs") is None:
        return factory(optimizer, total_steps=total_steps)
    return factory(optimizer)


def train_epoch(
    net: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> None:
    """One pass over ``batches``; a per-batch schedule steps after every optimizer step."""
    net.train()
    per_batch = isinstance(scheduler, PER_BATCH)
    for images, targets in batches:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if prepare is not None:
            images = prepare(images)
        loss = loss_fn(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if per_batch:
            scheduler.step()


@torch.no_grad()
def evaluate(
    net: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    device: torch.device,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy over ``batches``, in eval mode."""
    net.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, targets in batches:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if prepare is not None:
            images = prepare(images)
        logits = net(images)
        total_loss += loss_fn(logits, targets).item() * len(targets)
        correct += (logits.argmax(dim=1) == targets).sum().item()
        count += len(targets)
    return total_loss / max(count, 1), correct / max(count, 1)


def fit(
    net: nn.Module,
    train: Batches,
    val: Batches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: torch.device,
    epochs: int,
    checkpoint_dir: Path | None,
    prepare: Callable[[Tensor], Tensor] | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> list[float]:
    """Trains for ``epochs``, validating and checkpointing every epoch.

    Args:
        checkpoint_dir: Where ``best.pt`` and ``last.pt`` go; ``None`` keeps no
            checkpoints.
        stop: Called after each validation with the epoch and the accuracy;
            returning True ends training.

    Returns:
        The ``time.perf_counter()`` at the start of every epoch and at the end.
    """
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    best = float("inf")
    stamps = []
    for epoch in range(epochs):
        stamps.append(time.perf_counter())
        train_epoch(net, train, loss_fn, optimizer, scheduler, device, prepare)
        val_loss, accuracy = evaluate(net, val, loss_fn, device, prepare)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None and not isinstance(scheduler, PER_BATCH):
            scheduler.step()
        if checkpoint_dir is not None:
            best = save_checkpoints(
                checkpoint_dir, epoch, net, optimizer, scheduler, val_loss, best
            )
        if stop is not None and stop(epoch, accuracy):
            break
    stamps.append(time.perf_counter())
    return stamps


def save_checkpoints(
    checkpoint_dir: Path,
    epoch: int,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    val_loss: float,
    best: float,
) -> float:
    """Writes ``last.pt``, and ``best.pt`` when ``val_loss`` beats ``best``; returns the best."""
    state = {
        "epoch": epoch,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }
    if val_loss < best:
        best = val_loss
        torch.save(state, checkpoint_dir / "best.pt")
    torch.save(state, checkpoint_dir / "last.pt")
    return best


# -- the time-to-accuracy worker -------------------------------------------------------


def load_class(class_path: str) -> type:
    """The class named ``class_path``; the project's networks come from their own file.

    ``project.models`` imports Lightning in its ``__init__``; a plain script
    needs only the file that defines the network.
    """
    module_name, _, name = class_path.rpartition(".")
    if module_name.split(".")[:2] == ["project", "models"]:
        source = REPO / "project" / "models" / "nets.py"
        spec = importlib.util.spec_from_file_location("plain_loop_nets", source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, name):
            raise ValueError(
                f"{class_path} is not defined in {source}; the plain loop builds the default "
                "config's network from that file, so extend benchmarks/plain_loop.py.load_class"
            )
        return getattr(module, name)
    return getattr(importlib.import_module(module_name), name)


def instantiate(config: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Builds ``{"class_path": ..., "init_args": {...}}`` with extra arguments."""
    return load_class(config["class_path"])(*args, **{**config.get("init_args", {}), **kwargs})


class TransformedImages(Dataset):
    """uint8 images and their targets; ``transform`` runs on every access."""

    def __init__(self, images: Sequence[Tensor], targets: Sequence[int], transform: Any) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.targets[index]


def decode_all(paths: Sequence[str], channels: int) -> Tensor | list[Tensor]:
    """Decodes every file once into uint8 tensors, stacked when they share a size."""
    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    images = [decode_image(path, mode=mode) for path in paths]
    same_size = len({tuple(image.shape) for image in images}) == 1
    return torch.stack(images) if same_size else images


def loader(
    spec: dict[str, Any], split: str, transform: Any, shuffle: bool, limit: int | None
) -> Iterable[tuple[Tensor, Tensor]]:
    images = decode_all(spec[f"{split}_paths"], spec["channels"])
    dataset = TransformedImages(images, spec[f"{split}_targets"], transform)
    batch_size = spec["batch_size"]
    data = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=spec["num_workers"],
        persistent_workers=spec["num_workers"] > 0,
        pin_memory=spec["device"] == "cuda",
        # A last training batch of one image would break batch norm.
        drop_last=shuffle and len(dataset) % batch_size == 1,
    )
    return data if limit is None else LimitedLoader(data, limit)


class LimitedLoader:
    """The first ``limit`` batches of a loader, every epoch (Lightning's ``limit_*_batches``)."""

    def __init__(self, data: DataLoader, limit: int) -> None:
        self.data = data
        self.limit = limit

    def __iter__(self):
        return itertools.islice(self.data, self.limit)

    def __len__(self) -> int:
        return min(len(self.data), self.limit)


def run_to_accuracy(spec: dict[str, Any], clock: Path) -> None:
    """Trains the spec's network on its split; writes when validation accuracy reached the target.

    ``clock`` gets ``{"reached_at": wall time or null, "epochs": n, "best_acc": a,
    "epoch_seconds": [...]}``.
    """
    torch.manual_seed(spec["seed"])
    device = torch.device(spec["device"])
    mean = torch.tensor(spec["mean"], device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"], device=device).view(1, -1, 1, 1)

    def normalize(images: Tensor) -> Tensor:
        return (images.to(torch.float32) / 255.0 - mean) / std

    train = loader(spec, "train", spec["train_transform"], True, spec["limit_train_batches"])
    val = loader(spec, "val", spec["eval_transform"], False, spec["limit_val_batches"])
    net = instantiate(spec["net"]).to(device)
    loss_fn = instantiate(spec["loss"]) if spec["loss"] else nn.CrossEntropyLoss()
    optimizer = instantiate(spec["optimizer"], decay_groups(net))
    factory = None
    if spec["scheduler"]:
        scheduler_class = load_class(spec["scheduler"]["class_path"])
        factory = functools.partial(scheduler_class, **spec["scheduler"].get("init_args", {}))
    scheduler = build_scheduler(factory, optimizer, spec["max_epochs"] * len(train))
    record: dict[str, Any] = {"reached_at": None, "epochs": 0, "best_acc": 0.0}

    def stop(epoch: int, accuracy: float) -> bool:
        record["epochs"] = epoch + 1
        record["best_acc"] = max(record["best_acc"], accuracy)
        if accuracy >= spec["target"]:
            record["reached_at"] = time.time()
            return True
        return False

    stamps = fit(
        net,
        train,
        val,
        loss_fn,
        optimizer,
        scheduler,
        device,
        spec["max_epochs"],
        Path(spec["checkpoint_dir"]),
        normalize,
        stop,
    )
    record["epoch_seconds"] = [b - a for a, b in itertools.pairwise(stamps)]
    clock.write_text(json.dumps(record))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=run_to_accuracy.__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="written by time_to_accuracy.py")
    parser.add_argument("--clock", type=Path, required=True, help="where to write the timings")
    args = parser.parse_args(argv)
    # The spec holds the data's transform objects (torchvision), hence a full unpickle.
    spec = torch.load(args.spec, weights_only=False)
    run_to_accuracy(spec, args.clock)


if __name__ == "__main__":
    main()
