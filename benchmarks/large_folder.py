"""A user's folder at real size: setup, epochs and memory against a plain ImageFolder loop.

The folder: 70,000 grayscale 28x28 PNGs in ``train/`` (60,000) and ``test/``
(10,000), each with 10 class folders, written once (``--folder`` keeps it for
later runs). Each side runs in a process of its own, so memory figures are
its own:

- template: ``ImageFolderDataModule`` (``setup("fit")`` with the check of
  every file, the split and the normalization statistics), then its training
  loader plus the per-batch conversion to normalized float; once with an empty
  check record (a first run), once with the record the first run left (a second
  run), and once with ``cache: true``;
- plain: ``torchvision.datasets.ImageFolder`` on ``train/`` (PIL, converted to
  grayscale) and a ``DataLoader``, with the per-image ``ToDtype`` and
  ``Normalize`` a plain loop would use.

Both sides: the same pad-2 random crop and flip, batch size 256, the same worker
processes (kept between epochs on both sides), shuffled. Only data loading
is timed, no model: images/s is images delivered per second of an epoch, the
first epoch including worker start-up. Peak RSS is the main process's, and
separately the largest worker's (forked workers share pages with the main
process, so the two do not add up).

    python -m benchmarks.large_folder [--folder DIR] [--images 70000] [--workers N] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.harness import Row, argument_parser, child_environment, finish

CLASSES = 10
SIDES = ("plain", "template-first", "template-again", "template-cache")


def _write_chunk(root: str, start: int, stop: int, train: int) -> None:
    import torch
    from torchvision.io import write_png

    generator = torch.Generator().manual_seed(start)
    for index in range(start, stop):
        label = index % CLASSES
        split = "train" if index < train else "test"
        folder = Path(root) / split / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        noise = torch.randint(0, 96, (1, 28, 28), generator=generator, dtype=torch.uint8)
        write_png(noise + 16 * label, str(folder / f"{index:06d}.png"))


def write_folder(root: Path, images: int, workers: int) -> Path:
    """``images`` PNGs, six sevenths in ``train/``, the rest in ``test/``; kept if present."""
    done = root / ".complete"
    if done.is_file() and done.read_text() == str(images):
        return root
    train = images * 6 // 7
    chunk = math.ceil(images / max(1, workers * 4))
    with ProcessPoolExecutor(max(1, workers)) as pool:
        jobs = [
            pool.submit(_write_chunk, str(root), start, min(images, start + chunk), train)
            for start in range(0, images, chunk)
        ]
        for job in jobs:
            job.result()
    done.write_text(str(images))
    return root


def _peaks() -> tuple[float, float]:
    """Peak RSS in MiB of this process and of the largest child that has ended."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def _epochs(loader, convert, epochs: int) -> list[float]:
    rates = []
    for _ in range(epochs):
        images = 0
        start = time.perf_counter()
        for batch in loader:
            images += convert(batch).shape[0]
        rates.append(images / (time.perf_counter() - start))
    return rates


def run_side(side: str, folder: Path, workers: int, epochs: int) -> dict:
    """One side's setup seconds, images/s per epoch and peak memory (in this process)."""
    import gc

    import torch
    from torchvision.transforms import v2

    crop = [v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()]
    started = time.perf_counter()
    extra: dict = {}
    if side == "plain":
        from torch.utils.data import DataLoader
        from torchvision.datasets import ImageFolder

        steps = [v2.PILToTensor(), *crop, v2.ToDtype(torch.float32, scale=True)]
        pipeline = v2.Compose([*steps, v2.Normalize([0.5], [0.25])])
        dataset = ImageFolder(str(folder / "train"), transform=pipeline, loader=_gray)
        loader = DataLoader(
            dataset,
            batch_size=256,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        setup = time.perf_counter() - started

        def convert(batch):
            return batch[0]
    else:
        from project.data import ImageFolderDataModule
        from project.models.inputs import InputNormalization

        data = ImageFolderDataModule(
            root=str(folder),
            channels=1,
            batch_size=256,
            num_workers=workers,
            val_fraction=0.0,
            train_transforms=crop,
            cache=side == "template-cache",
        )
        data.setup("fit")
        setup = time.perf_counter() - started
        loader = data.train_dataloader()
        store = data.datasets["train"].store
        if side == "template-cache":
            extra["cache_bytes_per_image"] = store.images.nbytes / len(store)

        # The model's own first step: uint8 to standardized float.
        normalize = InputNormalization(data.channels, *data.training_statistics())

        def convert(batch):
            return normalize(data.on_after_batch_transfer(batch, 0)[0])

    rates = _epochs(loader, convert, epochs)
    del loader
    gc.collect()  # ends the persistent workers, so their peak is counted
    own, worker = _peaks()
    return {"setup": setup, "rates": rates, "rss": own, "worker_rss": worker, **extra}


def _gray(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("L")


def measure(folder: Path, workers: int, epochs: int, cache_home: Path) -> dict[str, dict]:
    """Runs every side in its own process, the plain one first and last; returns their results."""
    env = {**child_environment(), "XDG_CACHE_HOME": str(cache_home)}
    results: dict[str, dict] = {}
    for side in [*SIDES, "plain"]:
        command = [
            sys.executable,
            "-m",
            "benchmarks.large_folder",
            "--side",
            side,
            "--folder",
            str(folder),
            "--workers",
            str(workers),
            "--epochs",
            str(epochs),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{side} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if side in results:  # the plain side twice: the better of the two
            result = max(results[side], result, key=lambda r: sum(r["rates"][1:]))
        results[side] = result
    return results


def rows_from(results: dict[str, dict], images: int, workers: int) -> list[Row]:
    plain = results["plain"]
    first, again, cached = (results[s] for s in SIDES[1:])
    where = f"{images:,} 28x28 PNGs, {workers} workers"

    def later(result: dict) -> float:
        tail = result["rates"][1:] or result["rates"]
        return sum(tail) / len(tail)

    def row(measure: str, unit: str, ours: float, theirs: float, note: str = "") -> Row:
        # Speeds have a goal: the template at least as fast as the plain loop.
        goal = ">= 1.0x" if unit == "images/s" else ""
        met = ours >= theirs if goal else None
        return Row("large folder", measure, unit, ours, theirs, goal=goal, met=met, note=note)

    cache_note = (
        f"cache: {cached['cache_bytes_per_image']:.0f} bytes per image "
        "(one 28x28 uint8 image is 784)"
    )
    return [
        row(
            f"setup, first run ({where})",
            "s",
            first["setup"],
            plain["setup"],
            "template setup decodes every file once (the check), plain only lists them",
        ),
        row("setup, second run (check remembered)", "s", again["setup"], plain["setup"]),
        row("first epoch, with worker start-up", "images/s", first["rates"][0], plain["rates"][0]),
        row("later epochs", "images/s", later(first), later(plain)),
        row("later epochs, cache: true", "images/s", later(cached), later(plain), cache_note),
        row("peak RSS, main process", "MiB", first["rss"], plain["rss"]),
        row("peak RSS, main process, cache: true", "MiB", cached["rss"], plain["rss"]),
        row("peak RSS, largest worker", "MiB", first["worker_rss"], plain["worker_rss"]),
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="where the PNGs are kept (default: a temp dir)")
    parser.add_argument("--images", type=int, default=70_000)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side is not None:
        print(json.dumps(run_side(args.side, args.folder, args.workers, args.epochs)))
        return []
    if args.smoke:
        args.images, args.epochs, args.workers = 700, 2, min(args.workers, 2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(args.folder or Path(tmp) / "images", args.images, args.workers)
        results = measure(folder, args.workers, args.epochs, Path(tmp) / "cache")
    rows = rows_from(results, args.images, args.workers)
    finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
