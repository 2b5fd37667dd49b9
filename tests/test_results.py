"""``python -m benchmarks.results``: the README's tables, regenerated from runs."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from conftest import FAST
from fakes import write_mnist

from benchmarks import results


def cells(report: str, label: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.slow
def test_the_digits_table_holds_each_seed_and_their_mean_and_spread(workdir: Path):
    output = workdir / "results"
    report = results.main(["digits", "--seeds", "0", "1", "--output", str(output), *FAST])
    with (output / "digits" / "runs.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["run"] for row in rows] == ["default-seed0", "default-seed1"]
    accuracy = [float(row["test/acc"]) for row in rows]
    f1 = [float(row["test/f1"]) for row in rows]
    row = cells(report, "default")
    assert row[1:3] == [f"{value:.4f}" for value in accuracy]
    assert row[3] == f"{statistics.fmean(accuracy):.4f} ± {statistics.stdev(accuracy):.4f}"
    assert row[4] == f"{statistics.fmean(f1):.4f} ± {statistics.stdev(f1):.4f}"
    assert float(row[5]) == pytest.approx(
        statistics.fmean(float(r["seconds"]) for r in rows), abs=1
    )
    assert "python -m benchmarks.results digits --seeds 0 1" in report
    assert "Measured on " in report
    assert (output / "results.md").read_text().strip() == report.strip()


@pytest.mark.slow
def test_the_fashion_table_reads_the_gzipped_files_where_debian_puts_them(workdir: Path):
    folder = write_mnist(
        workdir / "fashion", name="FashionMNIST", train=300, gzipped=True, flat=True
    )
    output = workdir / "results"
    arguments = ["fashion", "--seeds", "0", "--fashion-root", str(folder), "--output", str(output)]
    report = results.main([*arguments, *FAST])
    row = cells(report, "fashion-mnist")
    assert row[2].endswith("(one run)")  # one seed: no spread is claimed


def test_an_unknown_table_is_named():
    with pytest.raises(SystemExit, match=r"unknown tables \['digit'\]"):
        results.main(["digit"])


def test_without_names_only_the_tables_of_at_most_15_minutes_run(workdir: Path, monkeypatch):
    ran = []
    monkeypatch.setattr(results, "run_table", lambda name, *args: ran.append(name) or [])
    monkeypatch.setattr(results, "format_table", lambda *args: "")
    results.main(["--output", "results"])
    assert ran == results.quick_tables() and "digits" in ran
    # FashionMNIST's five seeds take hours here: named, never by default.
    assert not {"fashion", "fashion-best"} & set(ran)


@pytest.mark.slow
def test_the_overfitting_table_shows_the_gap_the_runs_logged(workdir: Path, monkeypatch):
    table = results.TABLES["overfitting"]
    two = {label: table.contenders[label] for label in ("nothing", "+ dropout")}
    monkeypatch.setattr(table, "contenders", two)
    output = workdir / "results"
    report = results.main(["overfitting", "--seeds", "0", "--output", str(output), *FAST])
    with (output / "overfitting" / "runs.csv").open() as file:
        log_dirs = [row["log_dir"] for row in csv.DictReader(file)]
    assert len(log_dirs) == 2
    for label, log_dir in zip(two, log_dirs, strict=True):
        logged = results.last_epoch_accuracy(log_dir)
        row = cells(report, label)
        # seed 0's test/acc, then test/acc, gap, train/acc, val/acc (one run each), seconds.
        assert row[3] == f"{logged['gap']:.4f} (one run)"
        assert row[4:6] == [f"{logged[m]:.4f} (one run)" for m in ("train/acc", "val/acc")]
        assert logged["gap"] == pytest.approx(logged["train/acc"] - logged["val/acc"])
