"""Faults that hit a training process: kills, interrupts, two runs at once, a full disk.

Each runs ``python -m project fit`` as a real subprocess in its own folder, so
the process can be killed or signalled like a user's or a scheduler's would.
A run is three epochs of four batches with the deterministic preset; a resumed
run must end with exactly the weights and test metrics of an uninterrupted one.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import make_workdir

TESTS = Path(__file__).resolve().parent
RUN = [
    "fit",
    "--config=configs/default.yaml",
    "--config=configs/presets/deterministic.yaml",
    "--trainer.max_epochs=3",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
# One epoch of two batches, no test: enough to write logs and a checkpoint.
SHORT = [*RUN, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
SHORT += ["--test_after_fit=false"]
TIMEOUT = 300


class PauseAt(L.Callback):
    """Holds training at the start of one batch until the test removes the marker file.

    Lets a test signal or kill the process at a known batch instead of racing it.
    """

    def __init__(self, epoch: int, batch: int, marker: str = "paused") -> None:
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        self.marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + TIMEOUT
        while self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def pause_at(epoch: int, batch: int) -> list[str]:
    return [
        "--trainer.callbacks+=test_reliability.PauseAt",
        f"--trainer.callbacks.init_args.epoch={epoch}",
        f"--trainer.callbacks.init_args.batch={batch}",
    ]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def start(workdir: Path, *args: str, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "project", *args]
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def run(workdir: Path, *args: str, **kwargs) -> tuple[int, str]:
    process = start(workdir, *args, **kwargs)
    output, _ = process.communicate(timeout=TIMEOUT)
    return process.returncode, output


def wait_for_pause(workdir: Path, process: subprocess.Popen) -> None:
    marker = workdir / "paused"
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before it paused:\n{process.communicate()[0]}")
        assert time.monotonic() < deadline, "the run never reached the pause"
        time.sleep(0.05)


def checkpoint(workdir: Path, version: int) -> dict:
    path = workdir / "logs" / "default" / f"version_{version}" / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)


def summary(output: str) -> list[str]:
    lines = re.findall(r"^\s*test (?:accuracy|macro F1)\s+\S+$", output, re.MULTILINE)
    assert len(lines) == 2, output[-3000:]
    return lines


def assert_same_weights(resumed: dict, uninterrupted: dict) -> None:
    assert resumed["epoch"] == uninterrupted["epoch"]
    assert resumed["global_step"] == uninterrupted["global_step"]
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), f"{key} differs after resuming"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, digits_tree: Path) -> tuple:
    """The reference: the same run, never interrupted."""
    workdir = make_workdir(tmp_path_factory.mktemp("uninterrupted"), digits_tree)
    status, output = run(workdir, *RUN)
    assert status == 0, output[-3000:]
    return checkpoint(workdir, 0), summary(output)


@pytest.mark.slow
def test_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    uninterrupted: tuple, tmp_path: Path, digits_tree: Path
):
    workdir = make_workdir(tmp_path, digits_tree)
    process = start(workdir, *RUN, *pause_at(epoch=1, batch=2))
    wait_for_pause(workdir, process)
    process.kill()
    process.communicate(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL
    # What a kill leaves: the checkpoint of the last finished epoch.
    assert checkpoint(workdir, 0)["epoch"] == 0

    status, output = run(workdir, *RUN, "--ckpt_path=last")
    assert status == 0, output[-3000:]
    assert "logs/default/version_0/checkpoints/last.ckpt" in output
    weights, metrics = uninterrupted
    assert_same_weights(checkpoint(workdir, 1), weights)
    assert summary(output) == metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "epoch", "batch"),
    [(signal.SIGTERM, 143, 1, 1), (signal.SIGINT, 130, 2, 0)],
    ids=["SIGTERM", "SIGINT"],
)
def test_interrupted_run_saves_its_batch_and_resumes_to_the_uninterrupted_result(
    uninterrupted: tuple,
    tmp_path: Path,
    digits_tree: Path,
    signum: signal.Signals,
    status: int,
    epoch: int,
    batch: int,
):
    workdir = make_workdir(tmp_path, digits_tree)
    process = start(workdir, *RUN, *pause_at(epoch, batch))
    wait_for_pause(workdir, process)
    process.send_signal(signum)
    (workdir / "paused").unlink()
    output, _ = process.communicate(timeout=TIMEOUT)

    assert process.returncode == status, output[-3000:]
    name = signal.Signals(signum).name
    assert f"{name}: stopped at epoch {epoch + 1}, batch {batch + 1} of 4" in output
    assert "Traceback" not in output
    saved = checkpoint(workdir, 0)
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert (saved["epoch"], progress["processed"]) == (epoch, batch + 1)

    resumed, output = run(workdir, *RUN, "--ckpt_path=last")
    assert resumed == 0, output[-3000:]
    weights, metrics = uninterrupted
    assert_same_weights(checkpoint(workdir, 1), weights)
    assert summary(output) == metrics


@pytest.mark.slow
def test_two_runs_started_together_keep_their_own_folders(tmp_path: Path, digits_tree: Path):
    workdir = make_workdir(tmp_path, digits_tree)
    first, second = start(workdir, *SHORT), start(workdir, *SHORT)
    for process in (first, second):
        output, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, output[-3000:]

    runs = sorted((workdir / "logs" / "default").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]
    writers = set()
    for folder in runs:
        # TensorBoard names each event file after the process that wrote it.
        pids = {name.name.split(".")[-2] for name in folder.glob("events.out.tfevents.*")}
        assert len(pids) == 1, f"{folder} holds logs of several runs: {pids}"
        writers |= pids
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert (folder / "config.yaml").is_file()
    assert writers == {str(first.pid), str(second.pid)}


def _file_size_limit(limit: int):
    def apply() -> None:
        # Writes past the limit fail with EFBIG instead of killing the process,
        # as they would with ENOSPC on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_stops_naming_the_file(tmp_path: Path, digits_tree: Path):
    workdir = make_workdir(tmp_path, digits_tree)
    # Room for logs and configs, not for a 3.4 MB checkpoint.
    status, output = run(workdir, *SHORT, preexec_fn=_file_size_limit(512 * 1024))

    assert status != 0
    last = output.strip().splitlines()[-1]
    assert "CheckpointWriteError" in last and "could not write checkpoint" in last, last
    assert "logs/default/version_0/checkpoints/" in last and "File too large" in last
    # Nothing half-written is left behind to be mistaken for a checkpoint.
    left = list((workdir / "logs" / "default" / "version_0").rglob("*ckpt*"))
    assert left == [], left
