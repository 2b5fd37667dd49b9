"""Beyond one process: torchrun on one and on two (simulated) nodes; metrics that stay right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import DEFAULT, DISTRIBUTED_ENV, free_port, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import RandomSampler

from project.data.sampling import ResumableSampler
from project.models.metrics import EpochMeans

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# Validation and test splits of odd sizes (189 and 361 images), so two processes cannot
# split them evenly: a padded sampler would count an image twice.
ODD_SPLITS = ["--data.init_args.val_fraction=0.105", "--data.init_args.test_fraction=0.2005"]
SHORT = [
    "--trainer.max_epochs=2",
    "--model.init_args.scheduler=null",  # a one-cycle schedule cannot run past its end
    "--trainer.limit_train_batches=4",
    "--trainer.enable_model_summary=false",
    *ODD_SPLITS,
]
FIT = ["-m", "project", "fit", *DEFAULT, "--config", "configs/presets/torchrun.yaml", *SHORT]


def trainer(rank: int, world: int, restarting: bool = False, processed: int = 0):
    """What ResumableSampler reads of a Trainer."""
    progress = SimpleNamespace(is_last_batch=False, current=SimpleNamespace(processed=processed))
    loop = SimpleNamespace(
        restarting=restarting, epoch_loop=SimpleNamespace(batch_progress=progress)
    )
    return SimpleNamespace(world_size=world, global_rank=rank, fit_loop=loop, current_epoch=0)


def epoch(size: int, rank: int, world: int, batch: int = 4, **restart) -> list[int]:
    sampler = ResumableSampler(
        RandomSampler(range(size)), batch, trainer(rank, world, **restart), seed=7
    )
    drawn = list(sampler)
    assert len(drawn) == len(sampler) or restart
    return drawn


@pytest.mark.parametrize("size", [40, 42, 43])
def test_each_training_image_is_drawn_once_per_epoch_across_two_processes(size: int):
    shares = [epoch(size, rank, 2) for rank in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(size))
    assert len(shares[0]) - len(shares[1]) in (0, 1)
    assert -(-len(shares[0]) // 4) == -(-len(shares[1]) // 4), "every process runs as many steps"


def test_a_share_short_of_a_step_repeats_one_image_rather_than_hang():
    # 33 images, batches of 8: rank 0 gets 17 (3 batches), rank 1 16 (2): rank 1 needs one more.
    shares = [epoch(33, rank, 2, batch=8) for rank in (0, 1)]
    assert [len(s) for s in shares] == [17, 17]
    assert set(shares[0]) | set(shares[1]) == set(range(33))


def test_a_run_resumed_mid_epoch_draws_the_rest_of_each_process_s_share():
    for rank in (0, 1):
        whole = epoch(43, rank, 2)
        rest = epoch(43, rank, 2, restarting=True, processed=2)
        assert rest == whole[2 * 4 :], "the two batches trained on before are skipped"


def test_the_epoch_loss_is_the_mean_over_every_process_s_samples():
    first, second = EpochMeans(), EpochMeans()
    first.add({"loss": torch.tensor(1.0)}, 30)  # process 0: 30 images at loss 1
    second.add({"loss": torch.tensor(4.0)}, 10)  # process 1: 10 images at loss 4
    both = [first.sums["loss"] + second.sums["loss"], torch.tensor(40.0)]

    def reduce(tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        return both.pop(-1) if tensor.numel() == 1 and float(tensor) == 30 else both.pop(0)

    means = first.compute(reduce, torch.device("cpu"))
    assert float(means["loss"]) == pytest.approx((30 * 1 + 10 * 4) / 40)


def launch(args: list[str], cwd: Path) -> subprocess.Popen:
    # As from a fresh shell: no rendezvous variables from another run.
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def single_process(subcommand: str, checkpoint: Path) -> dict[str, float]:
    cli = run_cli(
        subcommand,
        *DEFAULT,
        *ODD_SPLITS,
        f"--ckpt_path={checkpoint}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={subcommand}-in-one-process",
        "--trainer.enable_progress_bar=false",
    )
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def check_one_run_with_every_image_counted_once(workdir: Path, output: str) -> Path:
    runs = sorted((workdir / "logs" / "default").iterdir())
    assert [run.name for run in runs] == ["version_0"], "only rank 0 writes a run folder"
    checkpoints = sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, checkpoints
    last = runs[0] / "checkpoints" / "last.ckpt"
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    distributed = {name: events.Scalars(name)[-1].value for name in ("val/acc", "val/loss")}
    single = single_process("validate", last)
    # 189 images over two processes: the same figures as one process seeing each once.
    assert distributed["val/acc"] == pytest.approx(single["val/acc"], abs=1e-6)
    assert distributed["val/loss"] == pytest.approx(single["val/loss"], rel=1e-4)
    tested = single_process("test", last)
    assert f"test accuracy   {tested['test/acc']:.4f}" in output
    return last


@pytest.mark.slow  # runs processes
def test_torchrun_on_one_machine_writes_one_run_that_resumes_in_one_process(workdir: Path):
    output = finished(launch([*TORCHRUN, "--standalone", "--nproc-per-node=2", *FIT], workdir))
    assert output.count("test accuracy") == 1, "rank 0 alone reports"
    last = check_one_run_with_every_image_counted_once(workdir, output)

    # The checkpoint continues in one process. (On two processes: tests/test_distributed_slurm.py
    # resumes a two-process run mid-epoch, to the weights of an uninterrupted one.)
    more = ["--trainer.max_epochs=3", f"--ckpt_path={last}"]
    alone = "--trainer.logger.init_args.save_dir=logs-one-process"
    resumed = run_cli("fit", *DEFAULT, *SHORT[1:], *more, alone, "--test_after_fit=false")
    assert resumed.trainer.current_epoch == 3


@pytest.mark.slow  # runs processes
def test_two_nodes_on_loopback_write_one_run_with_every_image_counted_once(workdir: Path):
    port = free_port()
    nodes = [
        launch(
            [
                *TORCHRUN,
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                *FIT,
            ],
            workdir,
        )
        for rank in (0, 1)
    ]
    outputs = [finished(node) for node in nodes]
    assert "MEMBER: 2/2" in outputs[0] or "GLOBAL_RANK: 1" in outputs[1]
    check_one_run_with_every_image_counted_once(workdir, outputs[0])
