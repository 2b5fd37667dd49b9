"""Images in class subfolders: the layout torchvision's ImageFolder reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from project.data.datamodule import ImageDataModule, Samples
from project.data.files import ImageFiles
from project.data.splits import SPLITS
from project.exceptions import InputFileError, InputValueError, ProjectWarning
from project.images import IMAGE_EXTENSIONS, is_image_name, scan_folder, visible_files

# Folder names that mean a split, not a class.
SPLIT_LIKE = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})


def _visible_folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _holds_images(folder: Path) -> bool:
    # Stops at the first image: a large class folder is not listed twice.
    return any(is_image_name(path) for path in visible_files(folder))


class ImageFolderDataModule(ImageDataModule):
    """A folder with one subfolder of images per class.

    Either ``root/<class>/<image>`` (the DataModule draws a stratified split) or
    ``root/train/<class>/...`` with ``root/val/...`` and/or ``root/test/...``
    (the given split is used; a missing ``val`` or ``test`` is drawn from
    ``train``). Class names are the subfolder names, sorted; images may sit at
    any depth below their class folder. Files that are not images (by
    extension) are listed at setup and ignored; hidden files are ignored; a
    class folder without images is left out with a warning.

    Args:
        root: The folder.
        **kwargs: Everything :class:`ImageDataModule` takes.
    """

    def __init__(self, root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.found_classes = self.discover_classes()  # with images (under train/, if split)
        self.class_names = self.select_classes(self.found_classes)

    def _is_presplit(self) -> bool:
        return (self.root / "train").is_dir() and set(_visible_folders(self.root)) <= set(SPLITS)

    def discover_classes(self) -> list[str]:
        """The class folder names, sorted, leaving out folders without images."""
        if not self.root.is_dir():
            raise InputFileError(
                f"data root {str(self.root)!r} does not exist; expected a folder with one "
                "subfolder of images per class (set data.root)"
            )
        top = self.root / "train" if self._is_presplit() else self.root
        names = _visible_folders(top)
        empty = [name for name in names if not _holds_images(top / name)]
        if empty:
            rank_zero_warn(
                f"class folders without images left out: {', '.join(empty)} (under {top}); "
                "add images to them to train on those classes",
                category=ProjectWarning,
            )
        names = [name for name in names if name not in empty]
        split_like = sorted(set(names) & SPLIT_LIKE)
        if top == self.root and {"train", "training"} & set(split_like):
            rank_zero_warn(
                f"folders named like splits are read as classes: {', '.join(split_like)} (under "
                f"{top}); a split folder holds only train/, val/ and test/, each with one "
                "folder per class (rename valid/ to val/, move other folders out)",
                category=ProjectWarning,
            )
        if not names:
            raise InputFileError(
                f"data root {str(top)!r} has no class subfolders with images; expected "
                f"{top!s}/<class name>/<image files> ({', '.join(IMAGE_EXTENSIONS)})"
            )
        return names

    def find_samples(self) -> Samples:
        presplit = self._is_presplit()
        paths, targets, split, others, loose = [], [], [], [], []
        for split_name in SPLITS if presplit else ("",):
            top = self.root / split_name
            if not top.is_dir():
                continue
            if presplit:
                self._check_classes(top)
            loose += [
                path
                for path in sorted(top.iterdir())
                if is_image_name(path.name) and path.is_file() and not path.name.startswith(".")
            ]
            for index, name in enumerate(self.class_names):
                if not (top / name).is_dir():
                    continue
                images, not_images = scan_folder(top / name)
                others += not_images
                paths += images
                targets += [index] * len(images)
                split += [split_name] * len(images)
        if loose:
            listed = ", ".join(str(p) for p in loose[:5])
            more = f" and {len(loose) - 5} more" if len(loose) > 5 else ""
            rank_zero_warn(
                f"Ignored {len(loose)} images outside the class folders (each class is a "
                f"folder of its images): {listed}{more}",
                category=ProjectWarning,
            )
        if others:
            listed = ", ".join(str(p) for p in others[:5])
            more = f" and {len(others) - 5} more" if len(others) > 5 else ""
            rank_zero_info(f"Ignored {len(others)} files that are not images: {listed}{more}")
        if not paths:
            raise InputFileError(
                f"no image files under {str(self.root)!r} (classes: {', '.join(self.class_names)})"
            )
        return Samples(ImageFiles(paths, self.channels), targets, split if presplit else None)

    def _check_classes(self, top: Path) -> None:
        found = set(self.found_classes)
        extra = sorted(
            n for n in _visible_folders(top) if n not in found and _holds_images(top / n)
        )
        if extra:
            raise InputValueError(
                f"{str(top)!r} has images of classes {extra} that {str(self.root / 'train')!r} "
                f"has none of; every split needs the same classes"
            )
