"""Images listed in a CSV file: one row per image with its path, label and (optionally) split."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from project.data.datamodule import ImageDataModule, Samples
from project.data.files import ImageFiles
from project.exceptions import InputFileError, InputValueError

# Split cells as users write them; an empty cell means training.
SPLIT_NAMES = {
    "": "train",
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


class CSVDataModule(ImageDataModule):
    """Images listed in a CSV file with a header row, e.g.::

        path,label,split
        cats/001.jpg,cat,train
        dogs/017.png,dog,test

    Labels are class names or integer class indices. The class list is
    ``class_names`` when given (then a label outside it is an unknown label),
    otherwise every name in the label column, sorted; integer labels
    ``0..K-1`` name classes "0" to "K-1". Rows whose file is missing or whose
    label is unknown are skipped with one warning at setup (``strict: true``
    fails instead, listing them all). The split column is optional; rows
    marked ``train``, ``val`` (or ``valid``, ``validation``) or ``test`` keep
    their split, rows with an empty cell train, and a split no row names is
    drawn from the training rows.

    Args:
        csv_file: The CSV file.
        root: Folder the paths in the CSV are relative to; ``None``: the CSV's folder.
            Absolute paths in the CSV are used as they are.
        path_column: Header of the column with the image paths.
        label_column: Header of the column with the labels.
        split_column: Header of the optional split column; ignored when the CSV lacks it.
        class_names: All class names in class-index order; integer labels index
            into it. ``None``: taken from the labels.
        **kwargs: Everything :class:`ImageDataModule` takes.
    """

    def __init__(
        self,
        csv_file: str,
        root: str | None = None,
        path_column: str = "path",
        label_column: str = "label",
        split_column: str = "split",
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.csv_file = Path(csv_file)
        self.root = Path(root) if root is not None else self.csv_file.parent
        self.path_column = path_column
        self.label_column = label_column
        self.split_column = split_column
        self.rows = self._read_rows()
        self.source_class_names = list(class_names) if class_names else self._label_names()
        self.class_names = self.select_classes(self.source_class_names)

    def _read_rows(self) -> list[dict[str, str]]:
        if not self.csv_file.is_file():
            raise InputFileError(
                f"CSV file {str(self.csv_file)!r} does not exist (set data.csv_file)"
            )
        with self.csv_file.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = reader.fieldnames or []
            missing = [c for c in (self.path_column, self.label_column) if c not in columns]
            if missing:
                raise InputValueError(
                    f"{self.csv_file} has no column {missing} (its header is {columns}); "
                    "name the columns with data.path_column and data.label_column"
                )
            rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
        if not rows:
            raise InputValueError(f"{self.csv_file} has a header but no rows")
        return rows

    def _label_names(self) -> list[str]:
        labels = {row[self.label_column] for row in self.rows if row[self.label_column]}
        if labels and all(label.isdigit() for label in labels):
            return [str(i) for i in range(max(int(label) for label in labels) + 1)]
        return sorted(labels)

    def _class_index(self, label: str) -> int | None:
        """Index among ``source_class_names`` of a label (a name or an integer), or None."""
        if label in self.source_class_names:
            return self.source_class_names.index(label)
        if label.isdigit() and int(label) < len(self.source_class_names):
            return int(label)
        return None

    def find_samples(self) -> Samples:
        keep = {self.source_class_names.index(name): i for i, name in enumerate(self.class_names)}
        has_split = any(row.get(self.split_column) for row in self.rows)
        paths, targets, split, skipped = [], [], [], []
        for number, row in enumerate(self.rows, start=2):  # row 1 is the header
            where = f"{self.csv_file} row {number}"
            index = self._class_index(row[self.label_column])
            if index is None:
                skipped.append((where, f"unknown label {row[self.label_column]!r}"))
                continue
            if index not in keep:  # a class left out on purpose (data.classes)
                continue
            path = Path(row[self.path_column])
            path = path if path.is_absolute() else self.root / path
            if not row[self.path_column] or not path.is_file():
                skipped.append((where, f"file {str(path)!r} does not exist"))
                continue
            split_name = row.get(self.split_column, "").lower()
            if has_split and split_name not in SPLIT_NAMES:
                skipped.append((where, f"unknown split {split_name!r} (use train, val or test)"))
                continue
            paths.append(path)
            targets.append(keep[index])
            split.append(SPLIT_NAMES[split_name] if has_split else "train")
        return Samples(
            ImageFiles(paths, self.channels), targets, split if has_split else None, skipped
        )
