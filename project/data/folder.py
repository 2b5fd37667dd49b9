"""Images in class subfolders: the layout torchvision's ImageFolder reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from project.data.datamodule import SPLITS, ImageDataModule, Samples, stratified_split
from project.data.files import list_images


class ImageFolderDataModule(ImageDataModule):
    """A folder with one subfolder of images per class.

    Either ``root/<class>/<image>`` (the DataModule draws a stratified split) or
    ``root/train/<class>/...`` with ``root/val/...`` and/or ``root/test/...``
    (the given split is used; a missing ``val`` or ``test`` is drawn from
    ``train``). Class names are the subfolder names, sorted.

    Args:
        root: The folder.
        **kwargs: Everything :class:`ImageDataModule` takes.
    """

    def __init__(self, root: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.class_names = self.select_classes(self.discover_classes())

    def _is_presplit(self) -> bool:
        return (self.root / "train").is_dir() and {
            p.name for p in self.root.iterdir() if p.is_dir()
        } <= set(SPLITS)

    def discover_classes(self) -> list[str]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {str(self.root)!r} does not exist; expected a folder with one "
                "subfolder of images per class"
            )
        top = self.root / "train" if self._is_presplit() else self.root
        names = sorted(p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise FileNotFoundError(
                f"data root {str(top)!r} has no class subfolders; expected "
                f"{top!s}/<class name>/<image files>"
            )
        return names

    def find_samples(self) -> Samples:
        presplit = self._is_presplit()
        paths, targets, split = [], [], []
        for split_name in SPLITS if presplit else ("",):
            top = self.root / split_name
            if not top.is_dir():
                continue
            for index, name in enumerate(self.class_names):
                for path in list_images(top / name) if (top / name).is_dir() else []:
                    paths.append(path)
                    targets.append(index)
                    split.append(split_name)
            if presplit:
                self._check_classes(top)
        if not paths:
            raise FileNotFoundError(
                f"no image files under {str(self.root)!r} (classes: {', '.join(self.class_names)})"
            )
        if not presplit:
            return Samples(paths, targets)
        return Samples(paths, targets, self._complete_split(split, targets))

    def _check_classes(self, top: Path) -> None:
        def folders(path: Path) -> set[str]:
            return {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}

        extra = sorted(folders(top) - folders(self.root / "train"))
        if extra:
            raise ValueError(
                f"{str(top)!r} has class folders {extra} that {str(self.root / 'train')!r} "
                f"lacks; every split needs the same classes"
            )

    def _complete_split(self, split: list[str], targets: list[int]) -> list[str]:
        """Draws val and/or test from train where the tree does not provide them."""
        missing = {name for name in ("val", "test") if name not in split}
        if not missing:
            return split
        train = [i for i, name in enumerate(split) if name == "train"]
        fractions = {"val": self.val_fraction, "test": self.test_fraction}
        drawn = stratified_split(
            [targets[i] for i in train],
            {name: fractions[name] for name in sorted(missing)},
            self.seed,
        )
        completed = list(split)
        for i, name in zip(train, drawn, strict=True):
            completed[i] = name
        return completed
