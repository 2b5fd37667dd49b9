"""The one DataModule base: splits, transforms, loaders and class names for every source."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from project.data.check import FileCheck
from project.data.files import ImageDataset, ImageFiles, common_size, try_train_transform
from project.data.reports import report_skipped, split_table
from project.data.samples import Samples, checked_samples, default_num_workers
from project.data.sampling import TrainSampler, loader_sampler
from project.data.settings import check_settings
from project.data.splits import SPLITS, TrainSubset, complete_split
from project.data.statistics import split_statistics
from project.data.transforms import Preset, Size, compose, eval_transforms
from project.exceptions import InputFileError, InputValueError

__all__ = ["SPLITS", "ImageDataModule", "Samples", "compose", "default_num_workers"]


class ImageDataModule(L.LightningDataModule):
    """Base for image classification data: subclasses say where samples come from.

    A subclass sets ``self.class_names`` in ``__init__`` (so the model can be built
    before any file is read) and implements :meth:`find_samples`. Images stay uint8
    through augmentation and batching; the model scales and normalizes them on its
    device. The data computes the facts the model learns from it (class names,
    channels, training statistics, class counts); the CLI passes them on.

    Args:
        batch_size: Images per batch on each device.
        num_workers: Loader processes; ``None``: one per spare CPU core, at most 8.
        channels: 1 decodes every image as grayscale, 3 as RGB.
        image_size: Side the network sees (training crops, evaluation centre crop);
            ``None`` keeps the files' common size, or takes a pretrained backbone's.
        resize_size: Shorter side before the evaluation centre crop; ``None``:
            ``image_size / 0.875``, or the pretrained weights' value.
        val_fraction: Share held out for validation when the source has no such split.
        test_fraction: Share held out for testing, likewise.
        num_folds: Stratified k-fold over train and validation; the test split stays.
        fold: Which fold (0 to ``num_folds - 1``) validates.
        seed: Seed of the split: the same seed, the same split.
        augment: Training preset: ``none``, ``light`` (shifts, flips), ``standard``
            (RandomResizedCrop, flips, rotations, colour jitter) or ``strong`` (adds
            TrivialAugmentWide and RandomErasing).
        horizontal_flip: Whether presets mirror images; off for digits and text.
        train_transforms: Your own ``torchvision.transforms.v2`` list for training
            instead of a preset, on uint8 images, ending at a fixed size.
        batch_transform: A ``v2`` transform of whole training batches (float images in
            [0, 1], one-hot targets): ``v2.MixUp``, ``v2.CutMix`` or a ``v2.RandomChoice``;
            targets become soft ``(N, num_classes)``, which ``nn.CrossEntropyLoss`` takes.
        cache: Keep every decoded image in memory as uint8 (shared with workers).
        check_files: Decode every file at setup, so an unreadable one is reported
            before training; results are remembered, so later runs decode only new
            or changed files. Off only for large folders known to be clean.
        strict: Stop at setup with the full list of unusable files instead of one warning.
        sampler: Draws the training images each epoch from their class indices
            (``project.data.subsets.Balanced``); ``None`` shuffles.
        prefetch_factor: Batches each worker prepares ahead (``None``: PyTorch's default).
        predict_root: A folder of images (any layout) for ``predict``; ``None``: the test split.
        classes: Keep only these classes (by name, in this order); ``None`` keeps all.
        train_subset: Keep part of the training split (``project.data.subsets.FewLabels``,
            ``LongTail``); validation and test are untouched.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | None = None,
        channels: int = 3,
        image_size: int | None = None,
        resize_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_folds: int | None = None,
        fold: int = 0,
        seed: int = 0,
        augment: Preset = "none",
        horizontal_flip: bool = True,
        train_transforms: list[v2.Transform] | None = None,
        batch_transform: v2.Transform | None = None,
        cache: bool = False,
        check_files: bool = True,
        strict: bool = False,
        sampler: TrainSampler | None = None,
        prefetch_factor: int | None = None,
        predict_root: str | None = None,
        classes: list[str] | None = None,
        train_subset: TrainSubset | None = None,
    ) -> None:
        super().__init__()
        check_settings(
            batch_size=batch_size,
            num_workers=num_workers,
            prefetch_factor=prefetch_factor,
            image_size=image_size,
            resize_size=resize_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            num_folds=num_folds,
            fold=fold,
            custom_transforms=bool(train_transforms),
            augment=augment,
        )
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.channels = channels
        self.image_size = image_size
        self.resize_size = resize_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.num_folds = num_folds
        self.fold = fold
        self.seed = seed
        self.augment = augment
        self.horizontal_flip = horizontal_flip
        self.train_transforms = list(train_transforms or [])
        self.batch_transform = batch_transform
        self.cache = cache
        self.check_files = check_files
        self.strict = strict
        self.sampler = sampler
        self.prefetch_factor = prefetch_factor
        self.predict_root = predict_root
        self.classes = classes
        self.train_subset = train_subset
        self.class_names: list[str] = []
        self.datasets: dict[str, ImageDataset] = {}
        self.skipped: list[tuple[str, str]] = []
        self._native_size: Size | None = None
        self._check: FileCheck | None = None
        self._statistics: tuple[list[float], list[float]] | None = None

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
            raise InputValueError(f"classes {unknown} are not in the data; it has {available}")
        return list(self.classes)

    # -- setup -------------------------------------------------------------------------

    def use_input_size(self, crop_size: int | None, resize_size: int | None = None) -> None:
        """Crop and resize sizes a pretrained network expects, for each one the user left unset.

        The CLI calls this with the sizes the model's weights were trained at,
        before setup.
        """
        if self.image_size is None and crop_size is not None:
            self.image_size = int(crop_size)
            if self.resize_size is None and resize_size is not None:
                self.resize_size = int(resize_size)

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predict_root is not None:
            from project.data.predict import folder_to_predict

            store, checked, unreadable = folder_to_predict(
                Path(self.predict_root), self.channels, self.check_files, self.num_workers
            )
            self.skipped += report_skipped(unreadable, "images to predict", self.strict)
            if not store.paths:
                raise InputFileError(f"predict_root {self.predict_root!r} holds no readable image")
            if self.image_size is None:
                self._native_size = common_size(store, checked)
            self.datasets["predict"] = ImageDataset(
                store, range(len(store)), None, self.eval_transform(), return_names=True
            )
            return
        if "train" not in self.datasets:
            self._build_splits()
        if stage == "predict":
            test = self.datasets["test"]
            self.datasets["predict"] = ImageDataset(
                test.store, test.indices, None, self.eval_transform(), return_names=True
            )

    def _build_splits(self) -> None:
        samples = self.find_samples()
        skipped = list(samples.skipped)
        checked = None
        if isinstance(samples.store, ImageFiles) and (self.check_files or self.cache):
            shrink = self.eval_resize_size() if self.image_size is not None else None
            samples, checked, unreadable = checked_samples(
                samples, self.channels, self.num_workers, self.cache, shrink
            )
            skipped += unreadable
        self.skipped += report_skipped(skipped, "samples", self.strict)
        if not samples.targets:
            raise InputFileError(f"{type(self).__name__} found no usable images")
        split = self._split(samples)
        by_split: dict[str, list[int]] = {name: [] for name in SPLITS}
        for index, name in enumerate(split):
            by_split[name].append(index)
        if self.train_subset is not None:
            keep = self.train_subset(
                by_split["train"], samples.targets, self.num_classes, self.seed
            )
            by_split["train"] = keep
        if self.image_size is None:
            self._native_size = common_size(samples.store, checked)
        for name in SPLITS:
            indices = by_split[name]
            targets = [samples.targets[i] for i in indices]
            self.datasets[name] = ImageDataset(samples.store, indices, targets)
        rank_zero_info(
            split_table(self.datasets, self.class_names, self.seed, self.fold, self.num_folds)
        )
        self._check = checked
        self.datasets["train"].transform = self.train_transform()
        for name in ("val", "test"):
            self.datasets[name].transform = self.eval_transform()
        try_train_transform(self.datasets["train"], checked)

    def _split(self, samples: Samples) -> list[str]:
        split = samples.split or ["train"] * len(samples.targets)
        targets, names = samples.targets, self.class_names
        if self.num_folds is None:
            fractions = {"val": self.val_fraction, "test": self.test_fraction}
            return complete_split(split, targets, fractions, self.seed, names)
        from project.data.folds import kfold_split

        split = complete_split(split, targets, {"test": self.test_fraction}, self.seed, names)
        return kfold_split(split, targets, self.num_folds, self.fold, self.seed, names)

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, in class-index order (after setup)."""
        counts = Counter(self.datasets["train"].targets)
        return [counts[index] for index in range(self.num_classes)]

    @property
    def crop_size(self) -> Size | None:
        """Size of the images the network sees (known after setup when ``image_size`` is None)."""
        return self.image_size if self.image_size is not None else self._native_size

    def eval_resize_size(self) -> int | None:
        """The shorter side the evaluation transform resizes to before its centre crop."""
        if self.image_size is None:
            return None
        # The usual evaluation recipe: resize to 8/7 of the side, then a centre crop.
        return self.resize_size or round(self.image_size / 0.875)

    def eval_transform(self) -> v2.Transform:
        """Deterministic: resize and centre crop when ``image_size`` is set."""
        return compose(eval_transforms(self.image_size, self.eval_resize_size()))

    def train_transform(self) -> v2.Transform:
        """Your ``train_transforms``, or the ``augment`` preset, on uint8 images."""
        if self.train_transforms:
            return compose(self.train_transforms)
        crop = self.crop_size
        if crop is None or self.augment == "none":
            return self.eval_transform()
        from project.data.augment import train_preset

        return compose(
            train_preset(self.augment, crop, self.eval_resize_size(), self.horizontal_flip)
        )

    def on_after_batch_transfer(self, batch: tuple, dataloader_idx: int) -> tuple:
        # Batches travel to the device as uint8 (a quarter of the bytes of float32);
        # the model converts them there, once per batch rather than once per image.
        if not isinstance(batch, (tuple, list)):
            return batch  # images alone: the model summary's example input
        images, targets = batch
        if self.batch_transform is not None and self.trainer is not None and self.trainer.training:
            images, targets = self.mix(images.to(torch.float32).div_(255.0), targets)
        return images, targets

    def mix(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``batch_transform`` of a float batch and its class indices (soft targets out)."""
        if self.batch_transform is None:
            return images, targets
        return self.batch_transform(images, F.one_hot(targets, self.num_classes).to(images.dtype))

    def training_statistics(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (0-1 scale) of the training images, computed once, after setup.

        Free when the setup check decoded every file (it summed their pixels);
        otherwise from a seeded sample of 2,000 training images.
        """
        if self._statistics is None:
            train = self.datasets.get("train")
            if train is None or len(train) == 0:
                raise ValueError(
                    f"{type(self).__name__} has no training split to compute statistics on"
                )
            self._statistics = split_statistics(
                train.store, train.indices, self._check, self.channels, self.seed, self.num_workers
            )
            mean, std = self._statistics
            rank_zero_info(
                f"Normalization from the training split: mean {[round(m, 4) for m in mean]}, "
                f"std {[round(v, 4) for v in std]} (set model.init_args.mean and std to skip this)"
            )
        return self._statistics

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset, workers = self.datasets[split], self.num_workers
        world = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=loader_sampler(dataset, shuffle, self.sampler, self.batch_size, self.trainer),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._pin_memory(),
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            # A last training batch of one image would break batch norm.
            drop_last=shuffle and math.ceil(len(dataset) / world) % self.batch_size == 1,
        )

    def _pin_memory(self) -> bool:
        # Pinned memory only pays off for copies to a CUDA device.
        if self.trainer is not None:
            return self.trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")
