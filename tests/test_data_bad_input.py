"""Bad input is found at setup and reported by name; nothing fails mid-epoch because of a file."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from fakes import write_image_folder
from PIL import Image

from project.callbacks import LinkDataToModel, PredictionWriter
from project.data import ImageFolderDataModule
from project.models import ConvNet, ImageClassifier

CLASSES = ("cat", "dog", "bird")


def write_odd_images(folder: Path) -> list[Path]:
    """Readable images in every awkward mode and format, some smaller than the crop."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "rgba.png": Image.fromarray(rgb).convert("RGBA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "gray.jpg": Image.fromarray(rgb).convert("L"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "sixteen.png": Image.fromarray(np.full((30, 40), 16384, dtype=np.uint16)),
        "tiny.png": Image.fromarray(rgb[:6, :5]),
        "bitmap.bmp": Image.fromarray(rgb),
        "scan.tif": Image.fromarray(rgb),
    }
    for name, image in made.items():
        image.save(folder / name)
    # An animated GIF: three frames, of which the first is used.
    frames = [
        Image.fromarray(np.full((30, 40, 3), value, dtype=np.uint8)) for value in (0, 128, 255)
    ]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    return [*(folder / name for name in made), folder / "animated.gif"]


def write_broken_files(folder: Path) -> list[Path]:
    """Files with image names that cannot be decoded."""
    good = folder / "000.jpg"
    data = good.read_bytes()
    # One byte of a PNG's compressed pixels damaged: torchvision's decoder would end the process.
    noise = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(noise).save(png, format="PNG")
    damaged = bytearray(png.getvalue())
    damaged[len(damaged) // 2] ^= 0xFF
    broken = {
        "truncated.jpg": data[: len(data) // 3],
        "empty.png": b"",
        "text.jpg": b"not an image at all",
        "damaged.png": bytes(damaged),
    }
    for name, content in broken.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in broken]


@pytest.fixture
def messy(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A folder with broken files, odd formats, non-image files and an empty class folder."""
    root = write_image_folder(tmp_path / "messy", per_class=8)
    broken = write_broken_files(root / "cat")
    write_odd_images(root / "dog")
    (root / "dog" / "notes.txt").write_text("labelled by Ann")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "empty_class").mkdir()
    return root, broken


def skipped_warning(record: list[warnings.WarningMessage]) -> str:
    messages = [str(w.message) for w in record if "cannot be used" in str(w.message)]
    assert len(messages) == 1, messages
    return messages[0]


def test_unreadable_files_are_skipped_with_one_warning_naming_them(messy):
    root, broken = messy
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        datamodule = ImageFolderDataModule(
            root=str(root), image_size=16, augment="standard", num_workers=0
        )
        datamodule.setup("fit")
    message = skipped_warning(record)
    assert f"Skipped {len(broken)} samples" in message  # the damaged PNG among them
    for path in broken:
        assert str(path) in message
    assert any("empty_class" in str(w.message) for w in record)
    assert datamodule.class_names == sorted(CLASSES)
    used = {Path(p) for split in datamodule.datasets.values() for p in split.paths}
    assert len(used) == 8 + (8 + 9) + 8  # cats, dogs and the odd ones, birds
    assert not any(p.suffix in (".txt", "") for p in used)
    odd = {"rgba.png", "cmyk.jpg", "sixteen.png", "tiny.png", "scan.tif", "animated.gif"}
    assert odd <= {p.name for p in used}


def test_strict_fails_with_the_full_list(messy):
    root, broken = messy
    datamodule = ImageFolderDataModule(root=str(root), image_size=16, num_workers=0, strict=True)
    with pytest.raises(ValueError, match=f"{len(broken)} samples cannot be used") as error:
        datamodule.setup("fit")
    for path in broken:
        assert str(path) in str(error.value)
    assert "truncated" in str(error.value)


@pytest.mark.slow
def test_training_on_a_messy_folder_runs_through_every_image(messy):
    root, _ = messy
    datamodule = ImageFolderDataModule(
        root=str(root), image_size=16, augment="strong", batch_size=8, num_workers=0
    )
    model = ImageClassifier(net=ConvNet(num_classes=3, widths=(8,)), num_classes=3)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LinkDataToModel()],  # the training split's statistics, for the model
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == -(-len(datamodule.datasets["train"]) // 8)


def test_prediction_skips_unreadable_files_and_lists_them(tmp_path: Path):
    folder = tmp_path / "new"
    write_image_folder(folder, ("ant", "bee"), per_class=4, sizes=((20, 20),))
    broken = write_broken_files(folder / "ant")
    datamodule = ImageFolderDataModule(
        root=str(folder),
        predict_root=str(folder / "ant"),
        image_size=16,
        num_workers=0,
    )
    net = ConvNet(num_classes=2, widths=(8,))
    model = ImageClassifier(net=net, num_classes=2, mean=[0.5] * 3, std=[0.25] * 3)
    writer = PredictionWriter(output=str(tmp_path / "predictions.csv"))
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[writer])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.predict(model, datamodule=datamodule)
    message = skipped_warning(record)
    assert all(str(path) in message for path in broken)
    with writer.written.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 4
    assert {Path(row["path"]).name for row in rows} == {f"{n:03d}.jpg" for n in range(4)}
    assert sorted(path for path, _ in datamodule.skipped) == sorted(str(p) for p in broken)


def test_decoded_odd_images_have_the_requested_channels(tmp_path: Path):
    from project.images import load_image

    for path in write_odd_images(tmp_path):
        for channels in (1, 3):
            image = load_image(path, channels)
            assert image.dtype == torch.uint8 and image.shape[0] == channels, path.name
            assert image.shape[1:] == (30, 40) or path.name == "tiny.png", path.name
    assert load_image(tmp_path / "animated.gif", 1).unique().tolist() == [0]  # the first frame
    # 16384 of 65535 is a quarter: scaled, not clipped to 255 or cut to its low byte (0).
    assert load_image(tmp_path / "sixteen.png", 1).unique().tolist() == [64]


def test_an_image_over_pillow_s_pixel_limit_is_unreadable_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from project.images import UnreadableImageError, load_image

    path = tmp_path / "scan.bmp"
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(path)
    # Pillow refuses images over twice MAX_IMAGE_PIXELS (decompression bombs).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(UnreadableImageError, match=r"scan\.bmp: Image size \(1200 pixels\)"):
        load_image(path, 3)
