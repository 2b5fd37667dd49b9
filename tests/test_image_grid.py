"""What the model sees: the grid of augmented training images (``presets/pictures.yaml``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST, preset, run_cli, tensorboard_tags
from fakes import write_image_folder
from torchvision.transforms import v2

from project.callbacks.images import TrainingImageGrid
from project.data import ImageFolderDataModule

CLASSES = ["bird", "cat", "dog"]


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


@pytest.mark.slow
def test_the_pictures_preset_puts_the_grid_in_tensorboard(workdir: Path):
    cli = run_cli("fit", *preset("pictures"), *FAST)
    assert "train/augmented_images" in tensorboard_tags(Path(cli.trainer.log_dir))[1]
