"""Presets do what their comments promise: checked on the digits, on the CPU.

Every preset also parses and runs in a fast form in tests/test_configs.py;
these tests check the behaviour a user relies on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT, DISTRIBUTED_ENV, FAST, preset, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


# -- debugging ---------------------------------------------------------------------------


@pytest.mark.slow
def test_overfit_preset_drives_training_loss_near_zero(workdir: Path):
    cli = run_cli(
        "fit",
        *preset("overfit"),
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=30",
        "--trainer.check_val_every_n_epoch=30",  # the training loss is what counts
        *QUIET,
    )
    loss = float(cli.trainer.callback_metrics["train/loss_epoch"])
    # From ln(10) = 2.3 for a guess among ten classes down to the floor that label
    # smoothing sets: the cross-entropy of the smoothed target with itself (0 without).
    smoothing, classes = cli.model.loss.label_smoothing, 10
    target = torch.full((classes,), smoothing / classes)
    target[0] += 1 - smoothing
    floor = float(-(target * target.log()).sum())
    message = f"overfitting two batches left a loss of {loss:.3f}, floor {floor:.3f}"
    assert loss < floor + 0.05, message


# -- devices and strategies --------------------------------------------------------------


@pytest.mark.slow  # runs processes
def test_ddp_cpu_runs_two_processes_over_the_whole_validation_set(workdir: Path):
    # DDP starts its second process by re-running the command line, so the
    # run is a real `python -m project` in a subprocess, as a user starts it.
    command = [sys.executable, "-m", "project", "fit", *preset("ddp-cpu")]
    command += [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        *QUIET,
        "--test_after_fit=false",
    ]
    # A fresh launch, as from a shell: no rendezvous variables from another run.
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=600, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "MEMBER: 2/2" in output, "the second process did not join"

    runs = sorted((workdir / "logs" / "default").iterdir())
    assert [run.name for run in runs] == ["version_0"], "each process wrote its own run"
    checkpoints = sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, checkpoints

    events = EventAccumulator(str(runs[0]))
    events.Reload()
    ddp = {name: events.Scalars(name)[-1].value for name in ("val/acc", "val/loss")}
    # The same weights validated in one process see every validation image once.
    single = run_cli(
        "validate",
        *DEFAULT,
        "--ckpt_path",
        str(runs[0] / "checkpoints" / "last.ckpt"),
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.logger=false",
        *QUIET,
    ).trainer.callback_metrics
    assert ddp["val/acc"] == pytest.approx(float(single["val/acc"]), abs=1e-6)
    assert ddp["val/loss"] == pytest.approx(float(single["val/loss"]), rel=1e-4)


# -- reproducibility ---------------------------------------------------------------------


@pytest.fixture
def restore_determinism(monkeypatch: pytest.MonkeyPatch):
    # Lightning switches deterministic algorithms on for the whole process.
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.mark.slow
def test_deterministic_preset_repeats_metrics_exactly(workdir: Path, restore_determinism):
    def metrics() -> dict[str, float]:
        cli = run_cli(
            "fit",
            *preset("deterministic"),
            *FAST,
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=5",
            "--test_after_fit=false",
        )
        assert torch.are_deterministic_algorithms_enabled()
        return {name: float(value) for name, value in cli.trainer.callback_metrics.items()}

    first, second = metrics(), metrics()
    assert {"train/loss_epoch", "val/loss", "val/acc"} <= set(first)
    assert first == second


# -- profiling ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("profiler-simple", "run_training_batch"),  # time per Lightning action
        ("profiler-advanced", "Profile stats for: run_training_batch"),  # cProfile per action
        ("profiler-pytorch", "Self CPU time total"),  # time per operator
    ],
)
def test_profiler_presets_write_their_report(name: str, expected: str, workdir: Path):
    # The PyTorch profiler records steps 3-5 (wait 1, warmup 1, active 3).
    cli = run_cli(
        "fit", *preset(name), *FAST, "--trainer.limit_train_batches=6", "--test_after_fit=false"
    )
    run = Path(cli.trainer.log_dir)
    assert expected in (run / "fit-profile.txt").read_text()
    if name == "profiler-pytorch":
        traces = list(run.glob("*.pt.trace.json"))
        assert traces and traces[0].stat().st_size > 1000, sorted(p.name for p in run.iterdir())
