"""Files that configs expect on a user's machine, faked for offline tests.

``PREPARERS`` maps a config file name pattern (fnmatch, relative to
``configs/``) to a function ``prepare(workdir: Path) -> list[str]`` that
creates what the config needs under ``workdir`` (dataset files, a weights
file in ``$TORCH_HOME``) and returns extra CLI arguments for its fast run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Preparer = Callable[[Path], list[str]]

PREPARERS: dict[str, Preparer] = {}


def preparer_for(config: str) -> Preparer | None:
    from fnmatch import fnmatch

    for pattern, prepare in PREPARERS.items():
        if fnmatch(config, pattern):
            return prepare
    return None


# -- data sources (project.data) -------------------------------------------------------------


def _class_image(rng, index: int, height: int, width: int, channels: int = 3):
    """A noisy image whose colour says its class, so a model can tell classes apart."""
    import numpy as np

    base = np.zeros((height, width, channels), dtype=np.float64)
    base[..., index % channels] = 170.0
    base += (index * 37) % 60
    noisy = base + rng.normal(0.0, 25.0, base.shape)
    return noisy.clip(0, 255).astype(np.uint8)


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "bird"),
    per_class: int = 10,
    sizes: tuple[tuple[int, int], ...] = ((48, 40), (64, 48), (40, 56)),
    suffix: str = ".jpg",
) -> Path:
    """An ImageFolder tree ``root/<class>/<n><suffix>`` with images of several sizes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            height, width = sizes[n % len(sizes)]
            array = _class_image(rng, index, height, width)
            Image.fromarray(array).save(root / name / f"{n:03d}{suffix}")
    return root


def write_labels_csv(folder: Path, classes: tuple[str, ...] = ("cat", "dog", "bird")) -> Path:
    """``folder/labels.csv`` (path,label,split) over PNGs in ``folder/images``; returns the CSV."""
    import csv

    write_image_folder(folder / "images", classes, per_class=10, suffix=".png")
    path = folder / "labels.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "split"])
        for name in classes:
            for n in range(10):
                writer.writerow([f"images/{name}/{n:03d}.png", name, "test" if n < 3 else ""])
    return path


def write_mnist(
    root: Path,
    name: str = "MNIST",
    train: int = 150,
    test: int = 30,
    gzipped: bool = False,
    flat: bool = False,
) -> Path:
    """MNIST-format idx files in ``root/<name>/raw``, as torchvision leaves them (uncompressed).

    ``gzipped`` writes ``.gz`` files, as the original site and Debian ship them;
    ``flat`` puts them in ``root`` itself, as Debian's package does.
    """
    import gzip
    import struct

    import numpy as np

    raw = root if flat else root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    opener = gzip.open if gzipped else open
    suffix = ".gz" if gzipped else ""
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count, dtype=np.uint8) % 10
        images = np.stack([_class_image(rng, int(k), 28, 28, 1)[..., 0] for k in labels])
        with opener(raw / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as file:
            file.write(struct.pack(">IIII", 0x803, count, 28, 28) + images.tobytes())
        with opener(raw / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as file:
            file.write(struct.pack(">II", 0x801, count) + labels.tobytes())
    return raw


def write_cifar10(root: Path, per_batch: int = 30) -> Path:
    """``root/cifar-10-batches-py`` with the six batch files and batches.meta, as pickled dicts."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(k) % 10 for k in range(per_batch)]
        images = np.stack([_class_image(rng, k, 32, 32) for k in labels])
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, -1)  # rows of R, G, B planes
        entry = {"batch_label": name, "labels": labels, "data": data, "filenames": []}
        with (folder / name).open("wb") as file:
            pickle.dump(entry, file, protocol=2)
    from project.data.torchvision_sources import CIFAR10_CLASSES

    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch}
    with (folder / "batches.meta").open("wb") as file:
        pickle.dump(meta, file, protocol=2)
    return folder


# 32 pixels instead of the configs' 128: the fast run checks the wiring, not the resolution.
SMALL_IMAGES = ["--data.image_size=32"]


def prepare_imagefolder(workdir: Path) -> list[str]:
    root = write_image_folder(workdir / "data" / "my-images")
    return ["--data.root", str(root), *SMALL_IMAGES]


def prepare_csv(workdir: Path) -> list[str]:
    return ["--data.csv_file", str(write_labels_csv(workdir / "data" / "labelled")), *SMALL_IMAGES]


def prepare_mnist(workdir: Path) -> list[str]:
    write_mnist(workdir / "data")
    return []


def prepare_fashion_mnist(workdir: Path) -> list[str]:
    # As they are shipped; 300 training images, so that its 5% validation split
    # holds each of the 10 classes.
    write_mnist(workdir / "data", name="FashionMNIST", train=300, gzipped=True)
    return []


def prepare_cifar10(workdir: Path) -> list[str]:
    write_cifar10(workdir / "data")
    return []


PREPARERS.update(
    {
        "experiments/imagefolder.yaml": prepare_imagefolder,
        "experiments/csv.yaml": prepare_csv,
        "experiments/mnist.yaml": prepare_mnist,
        "experiments/fashion-mnist.yaml": prepare_fashion_mnist,
        "experiments/fashion-mnist-best.yaml": prepare_fashion_mnist,
        "experiments/fashion-mnist-long.yaml": prepare_fashion_mnist,
        "experiments/cifar10.yaml": prepare_cifar10,
    }
)


def prepare_compile(workdir: Path) -> list[str]:
    # Inductor takes minutes on a CPU; the "eager" backend traces the model
    # through torch.compile in seconds.
    return ["--trainer.callbacks.init_args.backend=eager"]


PREPARERS["presets/compile.yaml"] = prepare_compile


def prepare_batch_size_finder(workdir: Path) -> list[str]:
    # On a CPU the search would double up to the whole training split.
    return ["--trainer.callbacks.init_args.max_val=128"]


PREPARERS["presets/batch-size-finder.yaml"] = prepare_batch_size_finder


def prepare_log_lines(workdir: Path) -> list[str]:
    # The preset is a progress display: Lightning refuses one with the bar turned off.
    return ["--trainer.enable_progress_bar=true"]


PREPARERS["presets/log-lines.yaml"] = prepare_log_lines


# -- models (project.models): pretrained weights and checkpoints -----------------------------


def write_torchvision_weights(name: str, weights: str = "DEFAULT") -> Path:
    """Random weights for torchvision's ``name``, saved where ``weights`` would be downloaded.

    The file lands in ``$TORCH_HOME/hub/checkpoints/`` (an empty folder per
    test) under the download's own file name, so ``TorchvisionNet(name,
    weights=...)`` takes the name-based path with no network.
    """
    import torch
    from torchvision.models import get_model

    from project.models.backbones import cached_weights_path, resolve_weights

    enum = resolve_weights(name, weights)
    path = cached_weights_path(enum)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = get_model(name, num_classes=len(enum.meta["categories"]))
    torch.save(model.state_dict(), path)
    return path


def write_template_checkpoint(
    path: Path, net: dict, class_names: list[str], mean: list[float], std: list[float]
) -> Path:
    """A checkpoint shaped like those ``python -m project fit`` writes, with random weights.

    It holds what the models read from a checkpoint: the network's weights
    (``net.*``), the input statistics (``normalize.*``) and the hyperparameters
    that describe the network.
    """
    import importlib

    import lightning
    import torch

    from project.models import ImageClassifier

    init_args = dict(net.get("init_args") or {})
    init_args.update(num_classes=len(class_names), in_channels=len(mean))
    config = {"class_path": net["class_path"], "init_args": init_args}
    torch.manual_seed(0)
    module_name, _, class_name = net["class_path"].rpartition(".")
    net_module = getattr(importlib.import_module(module_name), class_name)(**init_args)
    module = ImageClassifier(net_module, len(class_names), mean=mean, std=std)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": {
            "_class_path": "project.models.ImageClassifier",
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
            "net": config,
            "num_classes": len(class_names),
            "class_names": class_names,
        },
    }
    if path.name.startswith("last"):
        # As ModelCheckpoint leaves it: last.ckpt remembers the run's best file.
        checkpoint["callbacks"] = {"ModelCheckpoint{}": {"best_model_path": str(path)}}
    torch.save(checkpoint, path)
    return path


def config_net(config: str, key: str = "net") -> dict:
    """The network a config under ``configs/`` gives as ``model.init_args.<key>``."""
    import yaml
    from conftest import CONFIGS

    return yaml.safe_load((CONFIGS / config).read_text())["model"]["init_args"][key]


def prepare_digits_transfer(workdir: Path) -> list[str]:
    # Stands in for a run of step 1 (digits-0to4-pretrain.yaml) where step 2 looks.
    write_template_checkpoint(
        workdir / "logs" / "digits-0to4-pretrain" / "version_0" / "checkpoints" / "last.ckpt",
        config_net("default.yaml"),
        [str(digit) for digit in range(5)],
        [0.3],
        [0.37],
    )
    return []


def prepare_digits_distillation(workdir: Path) -> list[str]:
    write_template_checkpoint(
        workdir / "logs" / "digits-teacher" / "version_0" / "checkpoints" / "last.ckpt",
        config_net("default.yaml"),
        [str(digit) for digit in range(10)],
        [0.3],
        [0.37],
    )
    return []


def prepare_ensemble(workdir: Path) -> list[str]:
    """Two folds' checkpoints where the ensemble preset looks for them."""
    for fold in (0, 1):
        write_template_checkpoint(
            workdir
            / "logs"
            / "folds-default"
            / f"default-fold{fold}"
            / "checkpoints"
            / "last.ckpt",
            config_net("default.yaml"),
            [str(digit) for digit in range(10)],
            [0.3],
            [0.37],
        )
    return []


def prepare_cifar10_resnet(workdir: Path) -> list[str]:
    return [*prepare_cifar10(workdir), "--data.batch_size=8"]


def prepare_cifar10_resnet18(workdir: Path) -> list[str]:
    write_torchvision_weights("resnet18", "IMAGENET1K_V1")
    return [*prepare_cifar10(workdir), "--data.batch_size=4", "--data.image_size=64"]


def prepare_imagefolder_efficientnet(workdir: Path) -> list[str]:
    write_torchvision_weights("efficientnet_b0", "DEFAULT")
    return [*prepare_imagefolder(workdir), "--data.batch_size=4"]


def prepare_imagefolder_mobilenet(workdir: Path) -> list[str]:
    write_torchvision_weights("mobilenet_v3_large", "DEFAULT")
    return [*prepare_imagefolder(workdir), "--data.batch_size=4"]


PREPARERS.update(
    {
        "experiments/digits-5to9-features.yaml": prepare_digits_transfer,
        "experiments/digits-5to9-finetune.yaml": prepare_digits_transfer,
        "experiments/digits-distillation.yaml": prepare_digits_distillation,
        "presets/ensemble.yaml": prepare_ensemble,
        "experiments/cifar10-resnet.yaml": prepare_cifar10_resnet,
        "experiments/cifar10-resnet18-finetune.yaml": prepare_cifar10_resnet18,
        "experiments/imagefolder-transfer.yaml": prepare_imagefolder_efficientnet,
        "experiments/imagefolder-mobilenetv3.yaml": prepare_imagefolder_mobilenet,
    }
)


def train_digits_0to4(folder: Path, digits: Path, epochs: int = 8) -> Path:
    """Runs step 1 of the transfer proof (digits-0to4-pretrain.yaml, shortened) in ``folder``.

    Real training on the real digits 0-4; returns the best checkpoint. Runs once
    per folder: later calls (other tests of the session) reuse the checkpoint.
    """
    import os

    from conftest import CONFIGS, run_cli

    from project.checkpoints import run_checkpoint

    runs = folder / "logs" / "digits-0to4-pretrain"
    if runs.is_dir():
        return run_checkpoint(runs, "best", "test")
    folder.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(folder)  # the config's relative paths (logs/...) land in folder
    try:
        run_cli(
            "fit",
            f"--config={CONFIGS / 'default.yaml'}",
            f"--config={CONFIGS / 'experiments' / 'digits-0to4-pretrain.yaml'}",
            f"--data.init_args.root={digits}",
            f"--trainer.max_epochs={epochs}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--test_after_fit=false",
        )
    finally:
        os.chdir(before)
    return run_checkpoint(runs, "best", "test")
