"""The classic small datasets, read from the files torchvision downloads: MNIST, CIFAR, ...

The whole dataset is held in memory as one uint8 tensor (at most 180 MB for
CIFAR), so there is nothing to decode per image and nothing to cache.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import pickle
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision.datasets as tv_datasets
from lightning.pytorch.utilities import rank_zero_info

from project.data.datamodule import ImageDataModule, Samples
from project.data.files import DecodedImages
from project.exceptions import InputFileError, InputValueError

DatasetName = Literal["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
CIFAR100_CLASSES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid
otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray
road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle
wardrobe whale willow_tree wolf woman worm
""".split()  # noqa: SIM905 (a hundred one-word lines otherwise)


# The four files of an MNIST-format dataset, each also found with a .gz suffix.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batch files, refusing anything but numpy arrays and builtins.

    A plain ``pickle.load`` would run whatever code a tampered file names.
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # Files written under numpy 1 name numpy.core, which numpy 2 renamed.
            for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return importlib.import_module(candidate)._reconstruct
                except (ImportError, AttributeError):
                    continue
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 spells bytes in Python 3
            return codecs.encode
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: CIFAR batch files hold only arrays and lists"
        )


def read_idx(path: Path) -> torch.Tensor:
    """The uint8 array of an IDX file (MNIST's format), plain or gzip-compressed.

    torchvision's reader opens only uncompressed files; the files as the
    original site and Debian ship them are gzipped.
    """
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise InputValueError(f"{path}: cannot be read ({error})") from error
    if len(data) < 4 or data[:3] != b"\0\0\x08" or not 1 <= data[3] <= 3:
        raise InputValueError(f"{path} is not an IDX file of bytes (the MNIST format)")
    header = 4 + 4 * data[3]
    shape = struct.unpack(f">{data[3]}I", data[4:header])
    values = np.frombuffer(data, dtype=np.uint8, offset=header)
    if values.size != int(np.prod(shape)):
        raise InputValueError(f"{path} holds {values.size} values; its header says {shape}")
    return torch.from_numpy(values.reshape(shape).copy())


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, list[int]]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels of one CIFAR-10/100 python batch file."""
    with path.open("rb") as file:
        entry = _ArrayUnpickler(file, encoding="latin1").load()
    labels = entry.get("labels", entry.get("fine_labels"))
    data = np.asarray(entry["data"], dtype=np.uint8)
    if labels is None or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise InputValueError(
            f"{path} is not a CIFAR batch file (expected 'data' of shape (N, 3072) and "
            f"'labels' or 'fine_labels')"
        )
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), [int(x) for x in labels]


class TorchvisionDataModule(ImageDataModule):
    """MNIST, FashionMNIST, CIFAR-10 or CIFAR-100, in torchvision's on-disk layout under ``root``.

    The official test set is the test split; validation is drawn from the
    training set (``val_fraction`` of it, stratified). Offline by default: with
    ``download: false`` and the files absent, setup stops with the list of
    files to place and where to get them.

    Args:
        name: Which dataset.
        root: Folder holding the dataset's folder (``MNIST/raw``,
            ``FashionMNIST/raw``, ``cifar-10-batches-py``, ``cifar-100-python``),
            or MNIST's four files themselves, gzipped or not (Debian's
            ``/usr/share/datasets/fashion-mnist``).
        download: Fetch the files into ``root`` when they are missing (needs network).
        channels: 1 or 3; ``None``: the dataset's own (1 for MNIST and
            FashionMNIST, 3 for CIFAR). 3 on MNIST repeats the gray channel for
            networks that need RGB.
        **kwargs: Everything :class:`ImageDataModule` takes; ``test_fraction`` is
            not used, since the dataset comes with its test set.
    """

    def __init__(
        self,
        name: DatasetName = "CIFAR10",
        root: str = "data",
        download: bool = False,
        channels: int | None = None,
        **kwargs: Any,
    ) -> None:
        if name not in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"):
            raise ValueError(
                f"unknown dataset {name!r}; choose MNIST, FashionMNIST, CIFAR10 or CIFAR100"
            )
        native = 3 if name.startswith("CIFAR") else 1
        super().__init__(channels=native if channels is None else channels, **kwargs)
        self.name = name
        self.root = Path(root)
        self.download = download
        self.class_names = self.select_classes(self.source_class_names())

    def source_class_names(self) -> list[str]:
        """The dataset's classes in label order."""
        return {
            "MNIST": [str(digit) for digit in range(10)],
            "FashionMNIST": list(tv_datasets.FashionMNIST.classes),
            "CIFAR10": CIFAR10_CLASSES,
            "CIFAR100": CIFAR100_CLASSES,
        }[self.name]

    def files(self) -> list[Path]:
        """Every file this dataset is read from."""
        if self.name.startswith("CIFAR"):
            if self.name == "CIFAR10":
                folder = self.root / tv_datasets.CIFAR10.base_folder
                names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
            else:
                folder = self.root / tv_datasets.CIFAR100.base_folder
                names = ["train", "test"]
            return [folder / n for n in names]
        return [self._mnist_file(name) for name in MNIST_FILES]

    def _mnist_file(self, name: str) -> Path:
        """``name`` or ``name.gz`` in torchvision's ``root/<name>/raw``, or in ``root`` itself."""
        raw = self.root / self.name / "raw"
        for path in (raw / name, raw / f"{name}.gz", self.root / name, self.root / f"{name}.gz"):
            if path.is_file():
                return path
        return raw / name

    def _how_to_get(self) -> str:
        source = getattr(tv_datasets, self.name)
        if self.name.startswith("CIFAR"):
            return f"download {source.url} and extract it into {self.root}/"
        archives = ", ".join(f"{f}.gz" for f in MNIST_FILES)
        where = (
            f"download {archives} from {source.mirrors[0]} into {self.root / self.name / 'raw'}/"
        )
        if self.name == "FashionMNIST":
            where += (
                " or into data.root, or install Debian's dataset-fashion-mnist package and "
                "set data.root: /usr/share/datasets/fashion-mnist"
            )
        return where

    def _missing_files_message(self, missing: list[Path]) -> str:
        listed = ", ".join(str(p) for p in missing)
        return (
            f"{self.name} files not found: {listed}. Set data.download: true to fetch them "
            f"(needs network), or {self._how_to_get()}"
        )

    def prepare_data(self) -> None:
        missing = [p for p in self.files() if not p.is_file()]
        if not missing:
            return
        if not self.download:
            raise InputFileError(self._missing_files_message(missing))
        dataset = getattr(tv_datasets, self.name)
        try:
            for train in (True, False):
                dataset(str(self.root), train=train, download=True)
        except Exception as error:
            raise RuntimeError(
                f"downloading {self.name} failed ({error}); {self._how_to_get()}"
            ) from error
        rank_zero_info(f"Downloaded {self.name} to {self.root}")

    def _load(self) -> tuple[torch.Tensor, list[int], torch.Tensor, list[int]]:
        missing = [p for p in self.files() if not p.is_file()]
        if missing:
            raise InputFileError(self._missing_files_message(missing))
        paths = self.files()
        if self.name.startswith("CIFAR"):
            batches = [read_cifar_batch(p) for p in paths]
            train, test = batches[:-1], batches[-1]
            images = torch.cat([b[0] for b in train])
            labels = [label for b in train for label in b[1]]
            return images, labels, test[0], test[1]
        train_images, train_labels, test_images, test_labels = (read_idx(p) for p in paths)
        for images, labels, (image_file, label_file) in (
            (train_images, train_labels, paths[:2]),
            (test_images, test_labels, paths[2:]),
        ):
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise InputValueError(
                    f"{image_file} ({tuple(images.shape)}) and {label_file} "
                    f"({tuple(labels.shape)}) are not N images and their N labels"
                )
        return (
            train_images.unsqueeze(1),
            train_labels.tolist(),
            test_images.unsqueeze(1),
            test_labels.tolist(),
        )

    def find_samples(self) -> Samples:
        train_images, train_labels, test_images, test_labels = self._load()
        source = self.source_class_names()
        keep = {source.index(name): i for i, name in enumerate(self.class_names)}
        images, targets, split, names = [], [], [], []
        for split_name, tensor, labels in (
            ("train", train_images, train_labels),
            ("test", test_images, test_labels),
        ):
            chosen = [i for i, label in enumerate(labels) if label in keep]
            images.append(tensor[chosen] if len(chosen) < len(labels) else tensor)
            targets += [keep[labels[i]] for i in chosen]
            split += [split_name] * len(chosen)
            names += [f"{self.name}/{split_name}/{i}" for i in chosen]
        store = DecodedImages(torch.cat(images), names, self.channels)
        return Samples(store, targets, split)
