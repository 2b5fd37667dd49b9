"""The one DataModule base: splits, transforms, loaders and class names for every source."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from project.data.files import ImageFileDataset, list_images

SPLITS = ("train", "val", "test")


@dataclass
class Samples:
    """What a source found: files, their class indices, and any split it defines itself.

    ``split`` holds, per sample, "train", "val" or "test" when the source says
    so (a pre-split folder tree, a CSV split column); ``None`` lets the
    DataModule draw a stratified, seeded split.
    """

    paths: list[Path]
    targets: list[int]
    split: list[str] | None = None
    skipped: list[Path] = field(default_factory=list)


def compose(transforms: list[v2.Transform]) -> v2.Transform:
    """Chains transforms; an empty list leaves images unchanged."""
    return v2.Compose(transforms) if transforms else v2.Identity()


def default_num_workers() -> int:
    """Loader processes: one per spare core, at most 8 (each one costs memory)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def stratified_split(targets: Sequence[int], fractions: dict[str, float], seed: int) -> list[str]:
    """Assigns each sample to "train" or to one of ``fractions``' splits.

    Each held-out split gets its fraction of all samples, with every class in
    the same proportion as overall; the same seed gives the same assignment.
    """
    from sklearn.model_selection import train_test_split

    split = ["train"] * len(targets)
    rest = list(range(len(targets)))
    remaining = 1.0
    for name, fraction in fractions.items():
        if fraction == 0:
            continue
        rest, chosen = train_test_split(
            rest,
            test_size=fraction / remaining,
            stratify=[targets[i] for i in rest],
            random_state=seed,
        )
        for i in chosen:
            split[i] = name
        remaining -= fraction
    return split


class ImageDataModule(L.LightningDataModule):
    """Base for image classification data: subclasses say where samples come from.

    A subclass sets ``self.class_names`` in ``__init__`` (so the model can be
    built before any file is read) and implements :meth:`find_samples`.

    Args:
        batch_size: Images per batch on each device.
        num_workers: Loader processes; ``None`` picks one per spare CPU core.
        channels: 1 decodes every image as grayscale, 3 as RGB.
        image_size: Side in pixels the network sees; ``None`` keeps the files' size
            (they must then all have the same size).
        val_fraction: Share of all samples held out for validation when the
            source defines no split.
        test_fraction: Share of all samples held out for testing, likewise.
        seed: Seed of the split; the same seed gives the same split on every run.
        train_transforms: ``torchvision.transforms.v2`` transforms applied to the
            uint8 training images before conversion to float and normalization.
            ``None`` trains on the evaluation transform (no augmentation).
        mean: Per-channel mean on the 0-1 scale; ``None`` computes it on the
            training split.
        std: Per-channel standard deviation, likewise.
        cache: Decode all images once at setup and keep them in memory.
        predict_root: A folder of images (any layout, labels not needed) for
            ``predict``; ``None`` predicts the test split.
        classes: Keep only these classes (by name, in this order); ``None`` keeps all.
        train_per_class: Keep at most this many training images per class
            (seeded), for few-label experiments; validation and test are untouched.
        long_tail_ratio: Thin the training split to a long tail: class counts
            fall geometrically from the largest class to ``1/long_tail_ratio`` of
            it (in class-index order); validation and test are untouched.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | None = None,
        channels: int = 3,
        image_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        train_transforms: list[v2.Transform] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        cache: bool = False,
        predict_root: str | None = None,
        classes: list[str] | None = None,
        train_per_class: int | None = None,
        long_tail_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
            raise ValueError(
                f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) "
                "must each be in [0, 1)"
            )
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                "training data; their sum must be below 1"
            )
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.channels = channels
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.train_transforms = list(train_transforms or [])
        self.mean = mean
        self.std = std
        self.cache = cache
        self.predict_root = predict_root
        self.classes = classes
        self.train_per_class = train_per_class
        if long_tail_ratio is not None and long_tail_ratio < 1:
            raise ValueError(f"long_tail_ratio must be at least 1, got {long_tail_ratio}")
        self.long_tail_ratio = long_tail_ratio
        self.class_names: list[str] = []
        self.datasets: dict[str, ImageFileDataset] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def find_samples(self) -> Samples:
        """Lists the labelled samples of this source."""
        raise NotImplementedError

    def select_classes(self, available: list[str]) -> list[str]:
        """The source's class names, narrowed to ``classes`` when that is given."""
        if self.classes is None:
            return available
        unknown = [name for name in self.classes if name not in available]
        if unknown:
            raise ValueError(f"classes {unknown} are not in the data; it has {available}")
        return list(self.classes)

    # -- setup -------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predict_root is not None:
            # Normalization comes from data.mean/std or from the checkpoint.
            self.datasets["predict"] = self._predict_dataset(Path(self.predict_root))
            return
        if "train" in self.datasets:
            return
        samples = self.find_samples()
        split = samples.split or stratified_split(
            samples.targets, {"val": self.val_fraction, "test": self.test_fraction}, self.seed
        )
        by_split: dict[str, list[int]] = {name: [] for name in SPLITS}
        for index, name in enumerate(split):
            by_split[name].append(index)
        by_split["train"] = self._thin_training(by_split["train"], samples.targets)
        for name in SPLITS:
            indices = by_split[name]
            self.datasets[name] = ImageFileDataset(
                [samples.paths[i] for i in indices],
                [samples.targets[i] for i in indices],
                channels=self.channels,
                cache=self.cache,
            )
        self._report_split()
        self._ensure_normalization(self.datasets["train"])
        self.datasets["train"].transform = self.train_transform()
        for name in ("val", "test"):
            self.datasets[name].transform = self.eval_transform()
        if stage == "predict":
            self.datasets["predict"] = self.datasets["test"]

    def _thin_training(self, indices: list[int], targets: Sequence[int]) -> list[int]:
        """Applies ``train_per_class`` and ``long_tail_ratio`` to the training indices."""
        if self.train_per_class is None and self.long_tail_ratio is None:
            return indices
        generator = torch.Generator().manual_seed(self.seed)
        order = [indices[i] for i in torch.randperm(len(indices), generator=generator)]
        per_class = Counter(targets[i] for i in indices)
        largest = max(per_class.values())
        limits = {}
        for index in range(self.num_classes):
            limit = per_class[index]
            if self.long_tail_ratio is not None and self.num_classes > 1:
                share = self.long_tail_ratio ** (-index / (self.num_classes - 1))
                limit = min(limit, max(1, round(largest * share)))
            if self.train_per_class is not None:
                limit = min(limit, self.train_per_class)
            limits[index] = limit
        kept, taken = [], Counter()
        for i in order:
            if taken[targets[i]] < limits[targets[i]]:
                kept.append(i)
                taken[targets[i]] += 1
        return sorted(kept)

    def _report_split(self) -> None:
        lines = [f"{'class':<16}" + "".join(f"{name:>8}" for name in SPLITS)]
        counts = {name: Counter(self.datasets[name].targets) for name in SPLITS}
        for index, class_name in enumerate(self.class_names):
            lines.append(
                f"{class_name:<16}" + "".join(f"{counts[name][index]:>8}" for name in SPLITS)
            )
        lines.append(f"{'total':<16}" + "".join(f"{len(self.datasets[n]):>8}" for n in SPLITS))
        table = "\n".join(lines)
        rank_zero_info(f"Images per class and split (seed {self.seed}):\n{table}")

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, in class-index order (after setup)."""
        counts = Counter(self.datasets["train"].targets)
        return [counts[index] for index in range(self.num_classes)]

    # -- transforms --------------------------------------------------------------------

    def _resize(self) -> list[v2.Transform]:
        if self.image_size is None:
            return []
        # The usual evaluation recipe: resize to 8/7 of the side, then a centre crop.
        return [v2.Resize(round(self.image_size / 0.875)), v2.CenterCrop(self.image_size)]

    def eval_transform(self) -> v2.Transform:
        """Deterministic: resize and centre crop when ``image_size`` is set."""
        return compose(self._resize())

    def train_transform(self) -> v2.Transform:
        """The configured augmentations, on uint8 images."""
        return compose(self.train_transforms or self._resize())

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch ``(N, C, H, W)`` to float: scaled to 0-1, then standardized."""
        if self.mean is None or self.std is None:
            raise ValueError(
                "no normalization statistics: give data.mean and data.std, or load a "
                "checkpoint (--ckpt_path), which stores them"
            )
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        # Scaling to 0-1 is ToDtype(scale=True)'s job; Normalize then standardizes.
        return (images.to(torch.float32) / 255.0 - mean) / std

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        # Batches travel to the device as uint8 (a quarter of the bytes of float32)
        # and are converted there, once per batch rather than once per image.
        images, targets = batch
        return self.normalize(images), targets

    def _ensure_normalization(self, train: ImageFileDataset) -> None:
        if self.mean is not None and self.std is not None:
            return
        self.mean, self.std = self.channel_statistics(train)
        rank_zero_info(
            f"Normalization from the training split: mean {[round(m, 4) for m in self.mean]}, "
            f"std {[round(s, 4) for s in self.std]}"
        )

    def channel_statistics(
        self, dataset: ImageFileDataset, max_images: int = 2000
    ) -> tuple[list[float], list[float]]:
        """Per-channel mean and std on the 0-1 scale, over at most ``max_images`` images."""
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(dataset), generator=generator)[:max_images].tolist()
        resize = compose(self._resize())
        total = torch.zeros(self.channels, dtype=torch.float64)
        squares = torch.zeros(self.channels, dtype=torch.float64)
        pixels = 0
        for index in order:
            image = resize(dataset.image(index)).to(torch.float64) / 255.0
            total += image.sum(dim=(1, 2))
            squares += image.square().sum(dim=(1, 2))
            pixels += image.shape[1] * image.shape[2]
        mean = total / pixels
        std = (squares / pixels - mean.square()).clamp_min(1e-12).sqrt()
        return mean.tolist(), std.tolist()

    def _predict_dataset(self, root: Path) -> ImageFileDataset:
        if not root.is_dir():
            raise FileNotFoundError(f"predict_root {str(root)!r} is not a folder of images")
        paths = list_images(root)
        if not paths:
            raise FileNotFoundError(
                f"predict_root {str(root)!r} holds no image files "
                f"(looked for {', '.join(sorted({'.png', '.jpg', '.jpeg'}))} and similar)"
            )
        return ImageFileDataset(
            paths, None, channels=self.channels, transform=self.eval_transform()
        )

    # -- loaders -----------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    # -- checkpoint state --------------------------------------------------------------

    def state_dict(self) -> dict:
        """Saved into checkpoints so that a model always meets the data it was trained on."""
        return {"class_names": self.class_names, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict) -> None:
        self.mean = state_dict.get("mean", self.mean)
        self.std = state_dict.get("std", self.std)
