"""Experiment trackers as overlays (``configs/presets/logger-*.yaml``), each run offline.

TensorBoard stays the default. CSV replaces it; MLflow (a local SQLite store) and
Weights & Biases (offline mode) log beside it, so the run folder, its config and
checkpoints stay where every other command looks for them. Each run here is a
separate process, as a user starts it: W&B hooks the process's output.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT, FAST
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SHORT = [arg for arg in FAST if "max_epochs" not in arg] + ["--trainer.max_epochs=2"]


def fit_with(tracker: str, workdir: Path) -> str:
    """Runs the default fit with ``presets/logger-<tracker>.yaml`` in a process; its output."""
    command = [sys.executable, "-m", "project", "fit", *DEFAULT]
    command += ["--config", f"configs/presets/logger-{tracker}.yaml", *SHORT]
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def tensorboard_scalar(run: Path, tag: str) -> list[float]:
    events = EventAccumulator(str(run))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


@pytest.mark.slow
def test_the_csv_logger_writes_the_metrics_to_a_file_in_the_run_folder(workdir: Path):
    fit_with("csv", workdir)
    run = workdir / "logs" / "default" / "version_0"
    with (run / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    accuracy = [float(row["val/acc"]) for row in rows if row.get("val/acc")]
    assert len(accuracy) == 2, "one value per epoch"
    assert [row["test/acc"] for row in rows if row.get("test/acc")], "the test after fit"
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_mlflow_records_the_run_in_a_local_store_beside_tensorboard(workdir: Path):
    from mlflow.tracking import MlflowClient

    fit_with("mlflow", workdir)
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'logs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("default")  # named after the experiment
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    logged = [m.value for m in client.get_metric_history(run.info.run_id, "val/acc")]
    folder = workdir / "logs" / "default" / "version_0"
    assert logged == pytest.approx(tensorboard_scalar(folder, "val/acc")), "the same figures"
    assert "test/acc" in run.data.metrics
    assert run.data.params["num_classes"] == "10"


@pytest.mark.slow
def test_wandb_offline_writes_the_run_to_a_local_folder(workdir: Path):
    fit_with("wandb", workdir)
    (offline,) = (workdir / "logs" / "wandb").glob("offline-run-*")
    run_id = offline.name.rsplit("-", 1)[1]
    records = (offline / f"run-{run_id}.wandb").read_bytes()
    # The run's records name what was logged: metrics of every stage and the settings.
    for key in (b"train/loss_epoch", b"val/acc", b"test/acc", b"class_names"):
        assert key in records, key
    assert (workdir / "logs" / "default" / "version_0" / "config.yaml").is_file()
