"""Class names end to end, and the grid of augmented training images."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST, run_cli, tensorboard_tags
from fakes import write_image_folder
from torchvision.transforms import v2

from project.callbacks import PredictionWriter, TrainingImageGrid
from project.data import ImageFolderDataModule

CLASSES = ["bird", "cat", "dog"]

# -- CSV --------------------------------------------------------------------------------------


# -- torchvision datasets on disk -----------------------------------------------------------


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
    mixup = v2.MixUp(alpha=1.0)
    mixing = ImageFolderDataModule(root=str(root), batch_transform=mixup, num_workers=0)
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


@pytest.mark.slow
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
