"""SLURM: two tasks of a job on this machine, pre-empted, requeued and resumed (no cluster needed).

SLURM's variables are set as srun sets them for 2 tasks on one node, and a fake
``scontrol`` on PATH records the requeue, as Lightning's own tests do it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT, DISTRIBUTED_ENV, free_port
from test_distributed import SHORT


def slurm_task(rank: int, run: Path, bin_dir: Path, port: int, epochs: int) -> subprocess.Popen:
    """One of two tasks of a SLURM job as srun starts them on one node, run in ``run``."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV and "SLURM" not in k}
    env.update(
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="train",
        SLURM_NTASKS="2",
        SLURM_NTASKS_PER_NODE="2",
        SLURM_NNODES="1",
        SLURM_NODEID="0",
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
        SLURM_NODELIST="127.0.0.1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    command = [sys.executable, "-m", "project", "fit", *DEFAULT]
    command += [
        "--config",
        "configs/presets/slurm.yaml",
        "--config",
        "configs/presets/deterministic.yaml",
    ]
    command += [*SHORT[1:], f"--trainer.max_epochs={epochs}", "--test_after_fit=false"]
    command += [f"--trainer.default_root_dir={run}"]
    log = (run / f"task{rank}.log").open("a")
    return subprocess.Popen(command, cwd=run.parent, env=env, stdout=log, stderr=log)


def slurm_job(run: Path, bin_dir: Path, epochs: int = 3) -> list[subprocess.Popen]:
    run.mkdir(exist_ok=True)
    port = free_port()
    return [slurm_task(rank, run, bin_dir, port, epochs) for rank in (0, 1)]


def wait(tasks: list[subprocess.Popen], run: Path) -> None:
    for task in tasks:
        task.wait(timeout=600)
    logs = "".join((run / f"task{r}.log").read_text()[-3000:] for r in (0, 1))
    assert [t.returncode for t in tasks] == [0, 0], logs


@pytest.mark.slow  # runs processes
def test_a_requeued_slurm_job_resumes_to_the_result_of_an_uninterrupted_one(workdir: Path):
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    calls = workdir / "scontrol.calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)

    whole = workdir / "uninterrupted"
    wait(slurm_job(whole, bin_dir), whole)

    run = workdir / "requeued"
    tasks = slurm_job(run, bin_dir)
    deadline = time.monotonic() + 300
    while len(list((workdir / "logs").rglob("last.ckpt"))) < 2:  # into the second epoch
        assert time.monotonic() < deadline and tasks[0].poll() is None, (
            run / "task0.log"
        ).read_text()
        time.sleep(0.2)
    for task in tasks:  # as SLURM signals every task
        task.send_signal(signal.SIGUSR1)
    wait(tasks, run)
    assert calls.read_text().split() == ["requeue", "4242"]
    assert list(run.glob("hpc_ckpt_*.ckpt")), "the checkpoint the requeued job resumes from"
    saved = torch.load(last_checkpoint(run), weights_only=True)
    assert saved["epoch"] < 2, "it stopped before the end"

    wait(slurm_job(run, bin_dir), run)  # the requeued job: same id, same folder
    log = (run / "task0.log").read_text()
    assert "Restoring states from the checkpoint path" in log and "hpc_ckpt_1.ckpt" in log
    expected = torch.load(last_checkpoint(whole), weights_only=True)["state_dict"]
    resumed = torch.load(last_checkpoint(run), weights_only=True)["state_dict"]
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected), "not the same weights"


def last_checkpoint(run: Path) -> Path:
    """The newest run's last.ckpt under ``run``'s logs."""
    found = sorted((run.parent / "logs" / "default").glob("version_*/checkpoints/last.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime)
