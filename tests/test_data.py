"""ImageDataModule: splits, folds, augmentation, normalization, loaders, model preprocessing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as L
import pytest
import torch
from fakes import write_image_folder
from torch import nn
from torchvision.transforms import v2

from project.data import ImageFolderDataModule
from project.data.files import DecodedImages
from project.images import load_image
from project.models.inputs import InputNormalization

CLASSES = ("cat", "dog", "bird")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 20 JPEGs each, in three different sizes."""
    return write_image_folder(tmp_path_factory.mktemp("data") / "pets", per_class=20)


@pytest.fixture(scope="module")
def square_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 20 PNGs each, all 24x24."""
    root = tmp_path_factory.mktemp("data") / "squares"
    return write_image_folder(root, per_class=20, sizes=((24, 24),), suffix=".png")


def folder(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("num_workers", 0)
    datamodule = ImageFolderDataModule(root=str(root), **kwargs)
    datamodule.setup("fit")
    return datamodule


def names(datamodule: ImageFolderDataModule, split: str) -> set[str]:
    return set(datamodule.datasets[split].paths)


def quick_trainer(**kwargs) -> L.Trainer:
    options = dict(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**options, **kwargs})


# -- splits -------------------------------------------------------------------------------


def test_split_is_stratified_and_the_same_for_the_same_seed(tree: Path):
    first = folder(tree, image_size=32, val_fraction=0.2, test_fraction=0.2, seed=3)
    again = folder(tree, image_size=32, val_fraction=0.2, test_fraction=0.2, seed=3)
    other = folder(tree, image_size=32, val_fraction=0.2, test_fraction=0.2, seed=4)
    for split in ("train", "val", "test"):
        assert names(first, split) == names(again, split)
    assert names(first, "val") != names(other, "val")
    assert first.class_names == list(sorted(CLASSES))
    # 20 images per class: 4 for validation and 4 for testing in every class.
    assert Counter(first.datasets["val"].targets) == {0: 4, 1: 4, 2: 4}
    assert Counter(first.datasets["test"].targets) == {0: 4, 1: 4, 2: 4}
    assert len(first.datasets["train"]) == 36


def test_split_is_printed_with_counts_per_class(tree: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level("INFO"):
        folder(tree, image_size=32, val_fraction=0.2, test_fraction=0.2)
    table = next(r.getMessage() for r in caplog.records if "per class and split" in r.getMessage())
    assert "cat" in table and "dog" in table and "bird" in table
    assert "total" in table and "36" in table


def test_folds_cover_train_and_val_once_and_keep_test_fixed(tree: Path):
    folds = [folder(tree, image_size=32, num_folds=3, fold=k, test_fraction=0.2) for k in range(3)]
    tests = [names(f, "test") for f in folds]
    assert tests[0] == tests[1] == tests[2]
    vals = [names(f, "val") for f in folds]
    pool = vals[0] | names(folds[0], "train")
    assert set().union(*vals) == pool
    assert sum(len(v) for v in vals) == len(pool) == 48
    for f in folds:
        counts = Counter(f.datasets["val"].targets)
        assert max(counts.values()) - min(counts.values()) <= 1  # stratified


def test_presplit_folder_keeps_its_split_and_draws_the_missing_one(tmp_path: Path):
    write_image_folder(tmp_path / "train", per_class=10, sizes=((24, 24),))
    write_image_folder(tmp_path / "test", per_class=3, sizes=((24, 24),))
    datamodule = folder(tmp_path, val_fraction=0.2)
    assert all("/test/" in path for path in names(datamodule, "test"))
    assert len(datamodule.datasets["test"]) == 9
    assert all("/train/" in path for path in names(datamodule, "val"))
    assert len(datamodule.datasets["val"]) == 6


def test_too_few_images_for_a_stratified_split_is_a_clear_error(tmp_path: Path):
    write_image_folder(tmp_path, per_class=3, sizes=((24, 24),))
    with pytest.raises(ValueError, match=r"val split .* fewer than the 3 classes"):
        folder(tmp_path, val_fraction=0.1, test_fraction=0.1)


def test_fractions_that_leave_too_few_training_images_name_the_keys():
    from project.data.splits import stratified_split

    targets = [0] * 6 + [1] * 6 + [2] * 6
    with pytest.raises(ValueError, match=r"leave 0 of 18 images for training.*val_fraction=0.5"):
        stratified_split(targets, {"val": 0.5, "test": 0.45}, seed=0)


def test_a_class_too_small_for_a_held_out_split_is_named_in_a_warning():
    from project.data.splits import stratified_split
    from project.exceptions import ProjectWarning

    targets = [0] * 12 + [1] * 12 + [2] * 12 + [3] * 2
    with pytest.warns(ProjectWarning, match=r"val split has no images of 1 classes.*'two'"):
        split = stratified_split(targets, {"val": 0.1}, seed=0, class_names=["a", "b", "c", "two"])
    assert "val" not in {name for name, target in zip(split, targets, strict=True) if target == 3}


# -- augmentation -------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["none", "light", "standard", "strong"])
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_give_uint8_images_of_the_crop_size(tree: Path, preset: str, channels: int):
    datamodule = folder(tree, image_size=32, augment=preset, channels=channels)
    for split in ("train", "val"):
        image, target = datamodule.datasets[split][0]
        assert image.dtype == torch.uint8
        assert image.shape == (channels, 32, 32)
        assert isinstance(target, int)


def test_evaluation_is_deterministic_and_training_is_not(tree: Path):
    datamodule = folder(tree, image_size=32, augment="strong")
    val = datamodule.datasets["val"]
    assert torch.equal(val[0][0], val[0][0])
    train = datamodule.datasets["train"]
    draws = [train[0][0] for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_light_preset_keeps_the_native_size_without_image_size(square_tree: Path):
    datamodule = folder(square_tree, augment="light")
    assert datamodule.crop_size == 24
    assert datamodule.datasets["train"][0][0].shape == (3, 24, 24)


def test_preset_and_custom_list_together_are_refused(tree: Path):
    with pytest.raises(ValueError, match=r"train_transforms and data\.augment"):
        ImageFolderDataModule(
            root=str(tree), augment="light", train_transforms=[v2.RandomHorizontalFlip()]
        )


def test_a_crop_larger_than_the_images_fails_at_setup_naming_a_file(tree: Path):
    with pytest.raises(ValueError, match=r"training transform fails on .*\.jpg \(\d+x\d+ pixels\)"):
        folder(tree, image_size=32, train_transforms=[v2.RandomCrop(60)])


def test_images_of_several_sizes_need_image_size(tree: Path):
    with pytest.raises(ValueError, match=r"images differ in size .* set data.image_size"):
        folder(tree)


def test_mixing_gives_soft_targets_on_training_batches_only(square_tree: Path):
    mixing = v2.RandomChoice([v2.MixUp(alpha=0.4), v2.CutMix(alpha=1.0)])  # torchvision's own
    datamodule = folder(square_tree, batch_transform=mixing)
    images = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    datamodule.trainer = SimpleNamespace(training=True, world_size=1)
    mixed, soft = datamodule.on_after_batch_transfer((images, targets), 0)
    # Mixing blends pixels: the model gets float images in [0, 1], and takes them.
    assert mixed.dtype == torch.float32 and mixed.min() >= 0 and mixed.max() <= 1
    assert soft.shape == (8, 3) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(dim=1), torch.ones(8))
    assert nn.CrossEntropyLoss()(torch.zeros(8, 3), soft) > 0  # the loss takes them
    datamodule.trainer = SimpleNamespace(training=False, world_size=1)
    same, hard = datamodule.on_after_batch_transfer((images, targets), 0)
    assert same is images and torch.equal(hard, targets)


# -- normalization and cache --------------------------------------------------------------


def test_statistics_are_those_of_the_training_images(square_tree: Path):
    datamodule = folder(square_tree)
    train = datamodule.datasets["train"]
    pixels = torch.stack([train.image(i) for i in range(len(train))]).double() / 255
    expected_mean = pixels.mean(dim=(0, 2, 3))
    expected_std = pixels.std(dim=(0, 2, 3), unbiased=False)
    mean, std = datamodule.training_statistics()
    assert torch.allclose(torch.tensor(mean).double(), expected_mean, atol=1e-6)
    assert torch.allclose(torch.tensor(std).double(), expected_std, atol=1e-6)
    # Unchecked files: a sample of the training images stands for them, with the same result here.
    unchecked = folder(square_tree, check_files=False).training_statistics()
    assert [*unchecked[0], *unchecked[1]] == pytest.approx([*mean, *std], abs=1e-6)
    # The model standardizes the uint8 batches the loaders give with them.
    batch = torch.stack([train[i][0] for i in range(len(train))])
    normalized = InputNormalization(3, mean, std)(batch)
    assert torch.allclose(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (mean, std))
    # The same floats as the textbook formula, to the bit (the default run's results depend on it).
    assert torch.equal(normalized, (batch.float() / 255 - mean) / std)


def test_cache_holds_one_uint8_tensor_equal_to_the_files(square_tree: Path):
    cached = folder(square_tree, cache=True)
    store = cached.datasets["train"].store
    assert isinstance(store, DecodedImages)
    assert isinstance(store.images, torch.Tensor) and store.images.dtype == torch.uint8
    assert store.images.shape == (60, 3, 24, 24)
    train = cached.datasets["train"]
    assert torch.equal(train.image(5), load_image(train.name(5), 3))


# -- loaders ------------------------------------------------------------------------------


def test_loaders_follow_the_settings(square_tree: Path):
    datamodule = folder(square_tree, batch_size=8, num_workers=2, prefetch_factor=3)
    loader = datamodule.train_dataloader()
    assert loader.batch_size == 8 and loader.num_workers == 2
    assert loader.persistent_workers and loader.prefetch_factor == 3
    assert not loader.pin_memory  # no CUDA device here
    datamodule.batch_size = 16  # what Lightning's batch-size finder changes
    assert datamodule.val_dataloader().batch_size == 16


def test_last_training_batch_of_one_image_is_dropped(square_tree: Path):
    datamodule = folder(square_tree, val_fraction=0.2, test_fraction=0.2)  # 36 training images
    datamodule.batch_size = 35
    assert datamodule.train_dataloader().drop_last
    datamodule.batch_size = 32
    assert not datamodule.train_dataloader().drop_last


# -- sizes from a pretrained model --------------------------------------------------------


class ShapeRecorder(L.LightningModule):
    """Records the shape of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)
        self.shapes: list[tuple] = []

    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.shapes.append(tuple(images.shape[1:]))
        return nn.functional.cross_entropy(self.layer(images.float().mean(dim=(2, 3))), targets)

    def validation_step(self, batch, batch_idx):
        self.shapes.append(tuple(batch[0].shape[1:]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.slow
def test_a_pretrained_size_fills_what_the_user_left_unset(tree: Path):
    datamodule = ImageFolderDataModule(root=str(tree), num_workers=0, batch_size=4)
    datamodule.use_input_size(28, 36)  # what the CLI passes for weights trained at 28 of 36 px
    model = ShapeRecorder()
    quick_trainer().fit(model, datamodule=datamodule)
    assert set(model.shapes) == {(3, 28, 28)}
    resize = datamodule.eval_transform().transforms[0]
    assert resize.size == [36]


@pytest.mark.slow
def test_user_sizes_win_over_a_pretrained_size(tree: Path):
    datamodule = ImageFolderDataModule(root=str(tree), num_workers=0, batch_size=4, image_size=20)
    datamodule.use_input_size(28, 36)
    model = ShapeRecorder()
    quick_trainer().fit(model, datamodule=datamodule)
    assert set(model.shapes) == {(3, 20, 20)}
    assert datamodule.eval_transform().transforms[0].size == [round(20 / 0.875)]


@pytest.mark.slow
def test_grayscale_files_are_repeated_to_three_channels(tmp_path: Path):
    from PIL import Image

    for name in CLASSES:
        (tmp_path / name).mkdir()
        for n in range(10):
            Image.new("L", (20, 20), color=40 * n).save(tmp_path / name / f"{n}.png")
    datamodule = ImageFolderDataModule(root=str(tmp_path), num_workers=0, batch_size=4)
    datamodule.use_input_size(28, 36)
    model = ShapeRecorder()
    quick_trainer().fit(model, datamodule=datamodule)
    image = datamodule.datasets["train"].image(0)
    assert image.shape == (3, 20, 20)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert set(model.shapes) == {(3, 28, 28)}


def test_pad_crop_flip_draws_every_shift_of_the_padded_image():
    from project.data.augment import RandomPadCropFlip

    image = torch.arange(1, 3 * 8 * 8 + 1, dtype=torch.int32).view(3, 8, 8)
    padded = nn.functional.pad(image, (2, 2, 2, 2))
    crops = {
        (top, left): padded[:, top : top + 8, left : left + 8]
        for top in range(5)
        for left in range(5)
    }
    shift = RandomPadCropFlip(8, padding=2)
    seen, flipped = set(), 0
    for _ in range(600):
        out = shift(image)
        match = [k for k, crop in crops.items() if torch.equal(out, crop)]
        mirrored = [k for k, crop in crops.items() if torch.equal(out, crop.flip(-1))]
        assert match or mirrored, "not a crop of the zero-padded image"
        seen.update(match or mirrored)
        flipped += bool(mirrored) and not match
    assert seen == set(crops)  # every one of the 25 shifts occurs
    assert 200 < flipped < 400
    never = RandomPadCropFlip(8, padding=2, horizontal_flip=False)
    for _ in range(50):
        out = never(image)
        assert any(torch.equal(out, crop) for crop in crops.values())
    assert RandomPadCropFlip(12, padding=1)(image).shape == (3, 12, 12)  # smaller than the crop


def test_folders_named_like_splits_beside_train_are_read_as_classes_with_a_warning(
    tmp_path: Path,
):
    from project.exceptions import ProjectWarning

    write_image_folder(tmp_path / "train", per_class=6, sizes=((24, 24),))
    write_image_folder(tmp_path / "valid", per_class=3, sizes=((24, 24),))
    with pytest.warns(ProjectWarning, match=r"named like splits are read as classes: train, valid"):
        datamodule = folder(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert datamodule.class_names == ["train", "valid"]


def test_a_split_with_images_of_a_class_train_has_none_of_is_refused(tmp_path: Path):
    write_image_folder(tmp_path / "train", per_class=6, sizes=((24, 24),))
    write_image_folder(tmp_path / "val", per_class=3, sizes=((24, 24),))
    empty = sorted(p for p in (tmp_path / "train").iterdir() if p.is_dir())[0]
    for image in empty.iterdir():
        image.unlink()  # its folder stays, empty: the class is left out of training
    with pytest.raises(ValueError, match=rf"has images of classes \['{empty.name}'\]"):
        folder(tmp_path)


def test_linked_folders_in_a_class_count_and_loose_images_are_reported(tmp_path: Path):
    import shutil

    from project.exceptions import ProjectWarning

    root = write_image_folder(tmp_path / "pets", per_class=6, sizes=((24, 24),))
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    elsewhere = tmp_path / "more"
    elsewhere.mkdir()
    for image in sorted(first.iterdir())[:3]:
        shutil.copy(image, elsewhere / f"more-{image.name}")
    (first / "more").symlink_to(elsewhere, target_is_directory=True)
    (first / "loop").symlink_to(root, target_is_directory=True)  # a link up the tree
    shutil.copy(sorted(first.iterdir())[0], root / "loose.png")
    with pytest.warns(ProjectWarning, match=r"Ignored 1 images outside the class folders.*loose"):
        datamodule = folder(root)
    used = [p for split in datamodule.datasets.values() for p in split.paths]
    assert sum("/more/more-" in str(p) for p in used) == 3  # followed, and the loop once
    assert len(used) == 6 * len(datamodule.class_names) + 3
