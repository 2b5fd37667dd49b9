"""Input pipeline: the project's training loader against the seed articles' recipe, in images/s.

Two cases, each on image folders this script writes to a temporary directory:

(a) photos: JPEGs of 500x375 pixels, RandomResizedCrop(224) and horizontal flips;
(b) small images: 32x32 PNGs, pad-4 random crops and flips (the project's
    ``light`` preset), the project with its in-memory cache on.

The project side is ``ImageFolderDataModule``'s training loader (decoding with
``torchvision.io``, ``transforms.v2`` on uint8 tensors, uint8 batches) plus the
per-batch conversion to normalized float that Lightning runs on each batch
(``on_after_batch_transfer``, here on the CPU). The baseline is the naive
recipe: ``torchvision.datasets.ImageFolder`` (PIL), transforms v1,
``ToTensor`` and ``Normalize`` per image. Same files, same augmentations, same
batch size, same worker processes; the two run alternately and the table gives
the median images/s of each. The first batch of every epoch (worker start-up)
is not timed.

    python -m benchmarks.dataloading [--workers N] [--rounds 5] [--photos 2000] [--small 20000]
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Row, alternate, argument_parser, finish, median, quiet_lightning

GOALS = {"photos": 1.5, "small": 3.0}
CLASSES = 10


def write_photos(root: Path, count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """``count`` JPEGs (quality 90) of smooth random colour fields with noise, in class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = size
    for index in range(count):
        folder = root / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        noisy = (field + rng.normal(0, 12, field.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{index:05d}.jpg", quality=90)
    return root


def write_small(root: Path, count: int) -> Path:
    """``count`` 32x32 RGB PNGs in class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"{index:05d}.png")
    return root


def images_per_second(batches: Iterable, convert: Callable[[object], torch.Tensor]) -> float:
    """Images per second over one pass, not counting the first batch (worker start-up)."""
    iterator = iter(batches)
    convert(next(iterator))
    images = 0
    start = time.perf_counter()
    for batch in iterator:
        images += convert(batch).shape[0]
    seconds = time.perf_counter() - start
    return images / seconds if seconds > 0 and images else math.nan


def project_loader(root: Path, case: str, batch_size: int, workers: int):
    """The project's training loader and its per-batch conversion, set up (files checked)."""
    from torchvision.transforms import v2

    from project.data import ImageFolderDataModule
    from project.models.inputs import InputNormalization

    if case == "photos":
        augment = [v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip()]
        options = {"image_size": 224, "train_transforms": augment, "cache": False}
    else:
        # The "light" preset: pad-4 random crops of 32 px images and flips.
        options = {"augment": "light", "cache": True}
    datamodule = ImageFolderDataModule(
        root=str(root),
        batch_size=batch_size,
        num_workers=workers,
        val_fraction=0.0,
        test_fraction=0.0,
        **options,
    )
    started = time.perf_counter()
    datamodule.setup("fit")
    setup_seconds = time.perf_counter() - started
    loader = datamodule.train_dataloader()

    # The model's own first step: uint8 to standardized float.
    normalize = InputNormalization(datamodule.channels, *datamodule.training_statistics())

    def convert(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return normalize(datamodule.on_after_batch_transfer(batch, 0)[0])

    return loader, convert, setup_seconds, datamodule


def naive_loader(root: Path, case: str, batch_size: int, workers: int, mean, std):
    """The seed articles' recipe: PIL ImageFolder, transforms v1, ToTensor, Normalize per image."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    if case == "photos":
        augment = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    else:
        augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    pipeline = transforms.Compose(
        [*augment, transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    dataset = datasets.ImageFolder(str(root), transform=pipeline)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    return loader, lambda batch: batch[0]


def measure(
    photos: int, small: int, workers: int, rounds: int, folder: Path | None = None
) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cases = {
            "photos": (write_photos(Path(tmp) / "photos", photos), 64),
            "small": (write_small(Path(tmp) / "small", small), 256),
        }
        for case, (root, batch_size) in cases.items():
            ours, convert, setup_seconds, datamodule = project_loader(
                root, case, batch_size, workers
            )
            # The same normalization on both sides, so both do the same arithmetic.
            naive, identity = naive_loader(
                root, case, batch_size, workers, *datamodule.training_statistics()
            )
            results = alternate(
                {
                    "project": lambda o=ours, c=convert: images_per_second(o, c),
                    "naive": lambda n=naive, i=identity: images_per_second(n, i),
                },
                rounds,
            )
            template, baseline = median(results["project"]), median(results["naive"])
            goal = GOALS[case]
            described = {
                "photos": f"{photos} JPEGs 500x375, RandomResizedCrop(224) + flip",
                "small": f"{small} PNGs 32x32, pad-4 crop + flip, cache on",
            }[case]
            rows.append(
                Row(
                    benchmark="data loading",
                    measure=f"{described}, {workers} workers",
                    unit="images/s",
                    template=template,
                    baseline=baseline,
                    goal=f">= {goal}x",
                    met=template / baseline >= goal if math.isfinite(template / baseline) else None,
                    note=(
                        f"({case}) project setup (decode check"
                        f"{', cache' if case == 'small' else ''}, statistics): "
                        f"{setup_seconds:.1f} s for {len(datamodule.datasets['train'])} images, "
                        "once per run, not in images/s"
                    ),
                )
            )
    return rows


def main(argv: Sequence[str] | None = None) -> list[Row]:
    from project.data.datamodule import default_num_workers

    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--rounds", type=int, default=5, help="alternating epochs of each side")
    parser.add_argument("--photos", type=int, default=2000, help="JPEGs in case (a)")
    parser.add_argument("--small", type=int, default=20000, help="PNGs in case (b)")
    parser.add_argument("--tmp", type=Path, help="where to write the images (default: system tmp)")
    args = parser.parse_args(argv)
    with quiet_lightning():
        if args.smoke:
            rows = measure(
                photos=80, small=600, workers=min(args.workers, 2), rounds=1, folder=args.tmp
            )
        else:
            rows = measure(args.photos, args.small, args.workers, args.rounds, args.tmp)
        finish(rows, args)
    return rows


if __name__ == "__main__":
    main()
