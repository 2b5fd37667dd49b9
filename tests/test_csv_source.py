"""The CSV source (a leaf): a file of paths and labels, its split column, its bad rows."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
from fakes import write_labels_csv
from test_data_bad_input import skipped_warning

from project.data.csv import CSVDataModule

CLASSES = ["bird", "cat", "dog"]


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


def test_csv_rows_with_missing_files_or_unknown_labels_are_reported(tmp_path: Path):
    path = write_labels_csv(tmp_path)
    with path.open("a", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["images/cat/999.png", "cat", ""])  # row 32: no such file
        writer.writerow(["images/cat/000.png", "kangaroo", ""])  # row 33: not a class
        writer.writerow(["images/dog/000.png", "", ""])  # row 34: no label
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        datamodule = CSVDataModule(
            csv_file=str(path), class_names=list(CLASSES), image_size=16, num_workers=0
        )
        datamodule.setup("fit")
    message = skipped_warning(record)
    assert "Skipped 3 samples" in message
    assert "row 32" in message and "999.png" in message and "does not exist" in message
    assert "row 33" in message and "unknown label 'kangaroo'" in message
    assert "row 34" in message
    assert sum(len(d) for d in datamodule.datasets.values()) == 30
    strict = CSVDataModule(csv_file=str(path), class_names=list(CLASSES), strict=True)
    with pytest.raises(ValueError, match=r"(?s)3 samples cannot be used.*row 32.*row 33.*row 34"):
        strict.setup("fit")


@pytest.mark.slow  # builds the whole run through the CLI
def test_a_csv_without_the_label_column_is_one_line_at_the_door(
    workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    from test_errors_at_any_stage import assert_one_line

    from project.cli import main
    from project.errors import at_the_door

    (workdir / "bad.csv").write_text("path,labelx\ndata/digits/0/0000.png,0\n")
    monkeypatch.delenv("PROJECT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stopped, at_the_door():
        main(["fit", "--config", "configs/experiments/csv.yaml", "--data.csv_file", "bad.csv"])
    assert_one_line(stopped.value.code, capsys.readouterr().err, "bad.csv has no column ['label']")
