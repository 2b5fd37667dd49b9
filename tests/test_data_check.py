"""The setup check of a user's folder: any size, any open-file limit, paid once per file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from project.data import check
from project.data.check import check_files
from project.data.remembered import record_folder


def write_tiny_folder(root: Path, count: int, classes: int = 10) -> list[Path]:
    """``count`` 6x6 grayscale PNGs in class folders, each class a different brightness."""
    generator = torch.Generator().manual_seed(0)
    paths = []
    for index in range(count):
        folder = root / f"c{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        image = torch.randint(0, 40, (1, 6, 6), generator=generator, dtype=torch.uint8)
        path = folder / f"{index:05d}.png"
        write_png(image + 20 * (index % classes), str(path))
        paths.append(path)
    return paths


LOW_LIMIT_RUN = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from project.data import ImageFolderDataModule

for cache in (False, True):
    data = ImageFolderDataModule(root=sys.argv[1], num_workers=2, batch_size=256, cache=cache)
    data.setup("fit")
    data.setup("test")
    seen = sum(len(images) for images, _ in data.train_dataloader())
    seen += sum(len(images) for images, _ in data.val_dataloader())
    seen += sum(len(images) for images, _ in data.test_dataloader())
    print(f"cache={cache} images={seen}", flush=True)

data = ImageFolderDataModule(root=sys.argv[1], num_workers=2, predict_root=sys.argv[1])
data.setup("predict")
named = sum(len(names) for _, names in data.predict_dataloader())
print(f"predicted={named}", flush=True)
"""


@pytest.mark.slow  # runs processes
def test_a_folder_of_thousands_sets_up_and_loads_at_an_open_file_limit_of_1024(tmp_path: Path):
    # Most desktops and containers allow a process 1,024 open files; the check
    # and the loaders must not hold one per image.
    write_tiny_folder(tmp_path / "images", 3000)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", LOW_LIMIT_RUN, str(tmp_path / "images")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cache=False images=3000" in done.stdout
    assert "cache=True images=3000" in done.stdout
    assert "predicted=3000" in done.stdout


def test_a_second_check_decodes_only_new_or_changed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    paths = write_tiny_folder(tmp_path, 40)
    (tmp_path / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths.append(tmp_path / "c0" / "broken.png")
    first = check_files(paths, channels=1)
    assert len(first.readable) == 40 and first.unreadable[0][0] == str(paths[-1])

    decoded = []
    real = check.load_image
    monkeypatch.setattr(check, "load_image", lambda path, c: decoded.append(path) or real(path, c))
    again = check_files(paths, channels=1)
    assert decoded == [], "nothing changed, nothing decoded"
    assert again.readable == first.readable and again.unreadable == first.unreadable
    assert again.shapes == first.shapes
    assert torch.equal(again.sums, first.sums) and torch.equal(again.squares, first.squares)

    # One file rewritten, one added: only those two are decoded again.
    write_png(torch.full((1, 6, 6), 255, dtype=torch.uint8), str(paths[3]))
    os.utime(paths[3], ns=(1, 1))
    added = tmp_path / "c1" / "new.png"
    write_png(torch.zeros(1, 8, 8, dtype=torch.uint8), str(added))
    third = check_files([*paths, added], channels=1)
    assert sorted(decoded) == sorted([paths[3], added])
    assert third.sums[3].item() == 255 * 36
    assert third.shapes[-1] == (1, 8, 8)
    # The record is per decode mode: RGB sums differ from grayscale ones.
    assert check_files(paths, channels=3).sums.shape == (40, 3)
    assert len(list(record_folder().glob("*.pt"))) == 2


def test_checking_part_of_a_folder_keeps_what_is_remembered_of_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    paths = write_tiny_folder(tmp_path, 40)
    check_files(paths, channels=1)
    # A run on two classes (data.classes) after one of their files changed.
    write_png(torch.zeros(1, 6, 6, dtype=torch.uint8), str(paths[3]))
    os.utime(paths[3], ns=(2, 2))
    subset = [p for p in paths if p.parent.name in ("c3", "c5")]
    decoded = []
    real = check.load_image
    monkeypatch.setattr(check, "load_image", lambda path, c: decoded.append(path) or real(path, c))
    check_files(subset, channels=1)
    assert decoded == [paths[3]]
    check_files(paths, channels=1)
    assert decoded == [paths[3]], "the other classes are still remembered"


def test_a_damaged_record_means_checking_again(tmp_path: Path):
    paths = write_tiny_folder(tmp_path, 12)
    first = check_files(paths, channels=1)
    for record in record_folder().glob("*.pt"):
        record.write_bytes(b"not a record")
    again = check_files(paths, channels=1)
    assert torch.equal(again.sums, first.sums)


def test_a_long_check_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(check, "PROGRESS_EVERY", 0.0)
    paths = write_tiny_folder(tmp_path, 300)
    with caplog.at_level("INFO"):
        check_files(paths, channels=1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("File check")]
    assert any("of 300 files decoded" in line for line in lines), lines
    assert "300 files decoded in" in lines[-1]


@pytest.mark.parametrize("remember", [False, True])
def test_the_check_keeps_no_images_unless_caching(tmp_path: Path, remember: bool):
    paths = write_tiny_folder(tmp_path, 20)
    assert check_files(paths, channels=1, remember=remember).images is None
    kept = check_files(paths, channels=1, keep_images=True)
    assert len(kept.images) == 20 and kept.images[0].dtype == torch.uint8


def test_a_read_only_cache_folder_still_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    paths = write_tiny_folder(tmp_path / "images", 5)
    assert len(check_files(paths, channels=1).readable) == 5
