"""Evaluation reports (``configs/presets/reports.yaml``): what the test figures are made of."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT, DISTRIBUTED_ENV, FAST, preset, run_cli, tensorboard_tags

from project.callbacks.reports import EvaluationReport


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_the_test_after_fit_writes_reports_that_agree_with_the_logged_figures(workdir: Path):
    # Two test batches of 32: 64 images, each counted once.
    cli = run_cli("fit", *preset("reports"), *FAST, "--trainer.limit_train_batches=5")
    run = Path(cli.trainer.log_dir)
    logged = cli.trainer.callback_metrics
    names = cli.model.class_names

    predictions = read_rows(run / "predictions.csv")
    assert len(predictions) == 64 and len({row["path"] for row in predictions}) == 64
    for row in predictions:
        assert Path(row["path"]).parent.name == row["true"], "the true class is the folder"
        probabilities = [float(row[name]) for name in names]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] == names[probabilities.index(max(probabilities))]
    right = sum(row["true"] == row["predicted"] for row in predictions)
    assert right / 64 == pytest.approx(float(logged["test/acc"]), abs=1e-6)

    matrix = read_rows(run / "confusion_matrix.csv")
    counts = [[int(row[name]) for name in names] for row in matrix]
    assert sum(map(sum, counts)) == 64
    assert sum(counts[i][i] for i in range(len(names))) == right
    for name, row in zip(names, matrix, strict=True):
        truly = [p for p in predictions if p["true"] == name]
        assert row["true \\ predicted"] == name
        assert [int(row[n]) for n in names] == [
            sum(p["predicted"] == n for p in truly) for n in names
        ]

    for row in read_rows(run / "per_class.csv"):
        if int(row["support"]):
            recall = float(logged[f"test/recall/{row['class']}"])
            assert float(row["recall"]) == pytest.approx(recall, abs=1e-5)

    _, images = tensorboard_tags(run)
    assert {"test/confusion_matrix", "test/confident_mistakes"} <= images
    assert (run / "confident_mistakes.png").stat().st_size > 0


@pytest.mark.slow
def test_the_test_subcommand_reports_on_the_checkpoint_it_tests(workdir: Path):
    fit = run_cli("fit", *preset("reports"), *FAST, "--test_after_fit=false")
    best = fit.trainer.checkpoint_callback.best_model_path
    tested = run_cli("test", *preset("reports"), *FAST, f"--ckpt_path={best}")
    report = next(c for c in tested.trainer.callbacks if isinstance(c, EvaluationReport))
    assert {p.name for p in report.written} == {
        "confusion_matrix.csv",
        "per_class.csv",
        "predictions.csv",
        "confident_mistakes.png",
    }
    assert all(p.parent == Path(tested.trainer.log_dir) for p in report.written)


def test_a_setting_that_cannot_work_is_refused():
    with pytest.raises(ValueError, match="num_mistakes must be 0 or more, got -1"):
        EvaluationReport(num_mistakes=-1)


@pytest.mark.slow  # runs processes
def test_two_processes_report_every_test_image_once(workdir: Path):
    # 360 test images over two processes; each gets 180, in batches of 32.
    command = [sys.executable, "-m", "project", "fit", *DEFAULT]
    command += [
        "--config",
        "configs/presets/ddp-cpu.yaml",
        "--config",
        "configs/presets/reports.yaml",
    ]
    command += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3"]
    command += ["--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"]
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    done = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (run,) = (workdir / "logs" / "default").iterdir()
    predictions = read_rows(run / "predictions.csv")
    paths = [row["path"] for row in predictions]
    assert len(paths) == 360 and len(set(paths)) == 360, "each test image once, none padded"
    images = {p.relative_to(workdir) for p in (workdir / "data" / "digits").glob("*/*.png")}
    assert {Path(path) for path in paths} <= images
    matrix = read_rows(run / "confusion_matrix.csv")
    assert sum(int(v) for row in matrix for k, v in row.items() if k != "true \\ predicted") == 360
