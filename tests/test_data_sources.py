"""Where images come from: CSV files, torchvision's datasets on disk, and class names end to end."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest
import torch
from conftest import FAST, run_cli, tensorboard_tags
from fakes import write_cifar10, write_image_folder, write_labels_csv, write_mnist

from project.callbacks import PredictionWriter, TrainingImageGrid
from project.data import CSVDataModule, ImageFolderDataModule, TorchvisionDataModule

CLASSES = ["bird", "cat", "dog"]

# -- CSV --------------------------------------------------------------------------------------


def test_csv_labels_name_the_classes_and_the_split_column_is_kept(tmp_path: Path):
    path = write_labels_csv(tmp_path)  # rows 0-2 of each class are marked test
    datamodule = CSVDataModule(csv_file=str(path), image_size=16, num_workers=0, val_fraction=0.2)
    assert datamodule.class_names == CLASSES
    datamodule.setup("fit")
    test_names = {Path(p).name for p in datamodule.datasets["test"].paths}
    assert test_names == {"000.png", "001.png", "002.png"}
    assert len(datamodule.datasets["test"]) == 9
    assert len(datamodule.datasets["val"]) + len(datamodule.datasets["train"]) == 21
    image, target = datamodule.datasets["train"][0]
    assert image.shape == (3, 16, 16) and 0 <= target < 3


def test_csv_integer_labels_index_the_classes(tmp_path: Path):
    source = write_labels_csv(tmp_path)
    rows = list(csv.DictReader(source.open()))
    numbered = tmp_path / "numbered.csv"
    with numbered.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["file", "class"])
        for row in rows:
            writer.writerow([row["path"], ["cat", "dog", "bird"].index(row["label"])])
    plain = CSVDataModule(csv_file=str(numbered), path_column="file", label_column="class")
    assert plain.class_names == ["0", "1", "2"]
    named = CSVDataModule(
        csv_file=str(numbered),
        path_column="file",
        label_column="class",
        class_names=["cat", "dog", "bird"],
        image_size=16,
        num_workers=0,
    )
    named.setup("fit")
    train = named.datasets["train"]
    assert all(
        f"/{named.class_names[t]}/" in p for p, t in zip(train.paths, train.targets, strict=True)
    )


def test_csv_without_the_named_columns_says_which_exist(tmp_path: Path):
    path = tmp_path / "labels.csv"
    path.write_text("filename,category\na.png,cat\n")
    with pytest.raises(
        ValueError, match=r"no column \['path', 'label'\].*\['filename', 'category'\]"
    ):
        CSVDataModule(csv_file=str(path))


# -- torchvision datasets on disk -----------------------------------------------------------


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
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST/raw/train-images-idx3-ubyte"):
        mnist.setup("fit")


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


# -- what the model sees -------------------------------------------------------------------


def test_image_grid_shows_augmented_images_with_class_captions(tmp_path: Path):
    root = write_image_folder(tmp_path / "pets", per_class=10, sizes=((24, 24),))
    datamodule = ImageFolderDataModule(root=str(root), augment="light", num_workers=0)
    datamodule.setup("fit")
    grid = TrainingImageGrid(num_images=10, columns=4, tile_size=32)
    images, captions = grid._samples(datamodule, datamodule.datasets["train"])
    assert images.shape == (10, 3, 24, 24) and images.dtype == torch.uint8
    assert set(captions) <= set(CLASSES)
    picture = grid._draw(images, captions)
    assert picture.shape == (3, 3 * (32 + 14), 4 * 32) and picture.dtype == torch.uint8
    mixing = ImageFolderDataModule(root=str(root), mixup_alpha=1.0, num_workers=0)
    mixing.setup("fit")
    _, mixed_captions = grid._samples(mixing, mixing.datasets["train"])
    assert any(" + " in caption for caption in mixed_captions)


def test_the_image_grid_leaves_the_runs_random_draws_alone(tmp_path: Path):
    """Adding the grid to a config must not change what the run trains on."""
    from types import SimpleNamespace

    root = write_image_folder(tmp_path / "pets", per_class=10, sizes=((24, 24),))
    datamodule = ImageFolderDataModule(root=str(root), augment="strong", num_workers=0)
    datamodule.setup("fit")
    grid = TrainingImageGrid(num_images=10, columns=4, tile_size=32)
    grid._log = lambda trainer, picture: None
    torch.manual_seed(3)
    before = torch.get_rng_state()
    grid.on_fit_start(SimpleNamespace(is_global_zero=True, datamodule=datamodule), None)
    assert grid.grid is not None
    assert torch.equal(torch.get_rng_state(), before)


# -- class names end to end ----------------------------------------------------------------


def test_class_names_travel_from_the_folder_to_checkpoint_logs_and_predictions(workdir: Path):
    root = write_image_folder(workdir / "data" / "pets", per_class=10)
    config = ["--config", "configs/experiments/imagefolder.yaml", "--data.root", str(root)]
    small = ["--data.num_workers=0", "--data.image_size=32"]  # names, not pixels, matter here
    cli = run_cli("fit", *config, *FAST, *small)
    best = cli.trainer.checkpoint_callback.best_model_path
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["class_names"] == CLASSES
    assert state["state_dict"]["normalize.mean"].shape == (1, 3, 1, 1)  # the model standardizes
    scalars, images = tensorboard_tags(Path(cli.trainer.log_dir))
    assert {f"test/recall/{name}" for name in CLASSES} <= scalars
    assert "train/augmented_images" in images

    predict = run_cli(
        "predict",
        *config,
        *FAST,
        *small,
        f"--data.predict_root={root / 'dog'}",
        f"--ckpt_path={best}",
    )
    writer = next(c for c in predict.trainer.callbacks if isinstance(c, PredictionWriter))
    with writer.written.open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[3:] == CLASSES
    assert {row["predicted"] for row in rows} <= set(CLASSES)
    assert len(rows) == 10
