"""torchvision's datasets on disk (a leaf): MNIST and CIFAR files read offline and safely."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from fakes import write_cifar10, write_mnist

from project.data.torchvision_sources import TorchvisionDataModule


def test_mnist_files_are_read_as_torchvision_reads_them(tmp_path: Path):
    from torchvision.datasets import MNIST

    write_mnist(tmp_path, train=150, test=30)
    datamodule = TorchvisionDataModule(name="MNIST", root=str(tmp_path), num_workers=0)
    assert datamodule.channels == 1 and datamodule.class_names == [str(d) for d in range(10)]
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) + len(datamodule.datasets["val"]) == 150
    assert len(datamodule.datasets["test"]) == 30
    reference = MNIST(str(tmp_path), train=False, download=False)
    test = datamodule.datasets["test"]
    assert torch.equal(test.image(7)[0], reference.data[7])
    assert test.targets[7] == int(reference.targets[7])
    assert datamodule.datasets["train"][0][0].shape == (1, 28, 28)
    rgb = TorchvisionDataModule(name="MNIST", root=str(tmp_path), channels=3, num_workers=0)
    rgb.setup("fit")
    assert rgb.datasets["test"].image(7).shape == (3, 28, 28)


def test_gzipped_files_in_a_flat_folder_read_as_the_plain_ones(tmp_path: Path):
    write_mnist(tmp_path / "plain", name="FashionMNIST")
    debian = write_mnist(tmp_path / "debian", name="FashionMNIST", gzipped=True, flat=True)
    assert sorted(p.name for p in debian.iterdir())[0] == "t10k-images-idx3-ubyte.gz"
    plain, gzipped = (
        TorchvisionDataModule(name="FashionMNIST", root=str(tmp_path / folder), num_workers=0)
        for folder in ("plain", "debian")
    )
    for datamodule in (plain, gzipped):
        datamodule.setup("fit")
    for split in ("train", "val", "test"):
        ours, theirs = plain.datasets[split], gzipped.datasets[split]
        assert ours.targets == theirs.targets
        assert all(torch.equal(ours.image(i), theirs.image(i)) for i in range(len(ours)))


def test_a_damaged_idx_file_is_named(tmp_path: Path):
    raw = write_mnist(tmp_path, gzipped=True)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    datamodule = TorchvisionDataModule(name="MNIST", root=str(tmp_path), num_workers=0)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: cannot be read"):
        datamodule.setup("fit")
    write_mnist(tmp_path, train=150, test=20, gzipped=True)
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    write_mnist(tmp_path / "other", test=30)
    (raw / "t10k-images-idx3-ubyte").write_bytes(
        (tmp_path / "other" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    )
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte \(\(30, 28, 28\)\) and "):
        datamodule.setup("fit")


def test_cifar_batches_are_read_with_their_pixel_layout(tmp_path: Path):
    folder = write_cifar10(tmp_path, per_batch=30)
    datamodule = TorchvisionDataModule(name="CIFAR10", root=str(tmp_path), num_workers=0)
    assert datamodule.channels == 3 and datamodule.class_names[0] == "airplane"
    datamodule.setup("fit")
    with (folder / "test_batch").open("rb") as file:
        entry = pickle.load(file, encoding="latin1")
    test = datamodule.datasets["test"]
    assert torch.equal(test.image(4), torch.from_numpy(entry["data"][4].reshape(3, 32, 32)))
    assert test.targets[4] == entry["labels"][4]
    assert len(datamodule.datasets["train"]) + len(datamodule.datasets["val"]) == 150


def test_missing_dataset_files_say_which_and_where_to_get_them(tmp_path: Path):
    datamodule = TorchvisionDataModule(name="CIFAR10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert "data.download: true" in message and "cifar-10-python.tar.gz" in message
    mnist = TorchvisionDataModule(name="FashionMNIST", root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        mnist.setup("fit")
    message = str(error.value)
    assert str(tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "train-images-idx3-ubyte.gz" in message  # no gunzip: the archives are read as they are
    assert "dataset-fashion-mnist" in message and "/usr/share/datasets/fashion-mnist" in message


def test_download_offline_fails_with_the_manual_route(tmp_path: Path):
    datamodule = TorchvisionDataModule(name="CIFAR10", root=str(tmp_path), download=True)
    with pytest.raises(RuntimeError, match=r"downloading CIFAR10 failed .* extract it into"):
        datamodule.prepare_data()


def test_a_tampered_cifar_file_cannot_run_code(tmp_path: Path):
    folder = write_cifar10(tmp_path, per_batch=30)

    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    with (folder / "test_batch").open("wb") as file:
        pickle.dump({"data": Payload(), "labels": [0]}, file, protocol=2)
    datamodule = TorchvisionDataModule(name="CIFAR10", root=str(tmp_path), num_workers=0)
    with pytest.raises(
        pickle.UnpicklingError, match=r"refusing to load (__builtin__|builtins)\.print"
    ):
        datamodule.setup("fit")
