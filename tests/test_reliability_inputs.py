"""Bad input a user can type: configs, checkpoints, folders, and files that are not what they seem.

Every case must end in a message naming what is wrong (the key, the path, both
sides of a mismatch), never in a silent success or a half-done run.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FAST, run_cli
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from project.callbacks import (
    AtomicCheckpointIO,
    CheckpointWriteError,
)
from project.callbacks.checkpointing import claim_log_versions
from project.data.sampling import ResumableSampler, reseed_everything

DEFAULT = ["--config", "configs/default.yaml"]


# -- configs ---------------------------------------------------------------------------------

NO_NETWORK = """\
data:
  class_path: project.data.DigitsDataModule
  init_args: {root: data/digits}
model:
  class_path: project.models.ImageClassifier
"""

BAD_CONFIGS = {
    "unknown key in a YAML file": (
        ["--config", "extra.yaml"],
        "trainer:\n  max_epochz: 3\n",
        "trainer.max_epochz",
    ),
    "unknown key on the command line": (
        ["--model.init_args.net.init_args.widthz=[3]"],
        None,
        "model.init_args.net.init_args.widthz: not an argument of project.models.ConvNet",
    ),
    "abbreviated key": (["--trainer.max_epoch=3"], None, "--trainer.max_epoch"),
    "wrong type on the command line": (
        ["--trainer.max_epochs=three"],
        None,
        "trainer.max_epochs: expected int, got 'three'",
    ),
    "wrong type in a YAML file": (
        ["--config", "extra.yaml"],
        "data:\n  init_args:\n    val_fraction: lots\n",
        "data.init_args.val_fraction: expected float, got 'lots'",
    ),
    "misspelled class path": (
        ["--model.init_args.net.class_path=project.models.ConvNett"],
        None,
        "model.init_args.net: cannot import class_path 'project.models.ConvNett'",
    ),
    "unknown argument of a scheduler": (
        ["--model.init_args.scheduler.init_args.max_lrr=0.1"],
        None,
        "model.init_args.scheduler.init_args.max_lrr: not an argument of "
        "torch.optim.lr_scheduler.OneCycleLR",
    ),
    "missing required value": (
        ["--config", "extra.yaml"],
        NO_NETWORK,
        "model.init_args.net: required, but not given",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_the_key(
    case: str, workdir: Path, capsys: pytest.CaptureFixture
):
    args, extra_yaml, expected = BAD_CONFIGS[case]
    if extra_yaml is not None:
        Path("extra.yaml").write_text(extra_yaml)
    base = [] if extra_yaml == NO_NETWORK else DEFAULT
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *base, *args, *FAST)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error: ") and expected in lines[0], lines
    assert len(lines) == 2 and "--help" in lines[1], lines
    assert not Path("logs").exists(), "a bad config must stop before anything runs"


# -- checkpoints -----------------------------------------------------------------------------


def test_checkpoints_and_logs_hold_no_pickled_code(trained: Path):
    run = trained.parents[1]
    for path in run.rglob("*"):
        if path.is_file() and path.suffix == ".ckpt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.is_file():
            assert path.suffix == ".yaml" or path.name.startswith("events.out"), path


FIVE_CLASSES = '--data.init_args.classes=["0","1","2","3","4"]'
SWAPPED = '--data.init_args.classes=["1","0","2","3","4","5","6","7","8","9"]'


@pytest.mark.parametrize(
    ("subcommand", "classes", "expected"),
    [
        ("test", FIVE_CLASSES, "but the data has 5 classes ['0', '1', '2', '3', '4']"),
        ("predict", FIVE_CLASSES, "but the data has 5 classes ['0', '1', '2', '3', '4']"),
        ("test", SWAPPED, "but the data has 10 classes ['1', '0', '2'"),
    ],
    ids=["test-class-count", "predict-class-count", "test-class-names"],
)
def test_checkpoint_for_other_classes_names_both_sides(
    trained: Path, workdir: Path, subcommand: str, classes: str, expected: str
):
    with pytest.raises(ValueError) as error:
        run_cli(subcommand, *DEFAULT, classes, f"--ckpt_path={trained}", *FAST)
    message = str(error.value)
    assert str(trained) in message
    assert "was trained on 10 classes ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']" in message
    assert expected in message


@pytest.mark.slow
def test_resuming_with_another_network_names_both_sides(trained: Path, workdir: Path):
    run = Path("logs") / "default" / "version_0" / "checkpoints"
    run.mkdir(parents=True)
    shutil.copy(trained, run / "last.ckpt")
    with pytest.raises(ValueError) as error:
        run_cli(
            "fit", *DEFAULT, "--model.init_args.net.init_args.widths=[16,32]", "--ckpt_path=last"
        )
    message = str(error.value)
    assert "holds another network than the config builds" in message
    assert "widths [32, 64] there, [16, 32] here" in message
    assert "net.features.0.weight is [32, 1, 3, 3] there, [16, 1, 3, 3] here" in message


def test_file_that_is_no_checkpoint_is_one_line(workdir: Path, capsys: pytest.CaptureFixture):
    Path("notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("test", *DEFAULT, "--ckpt_path=notes.ckpt", *FAST)
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.splitlines()[0]
    assert line.startswith("error: ckpt_path: notes.ckpt is not a checkpoint that loads safely")


# -- folders -----------------------------------------------------------------------------------

IMAGEFOLDER = ["--config", "configs/experiments/imagefolder.yaml"]


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("nowhere", "data root 'nowhere' does not exist; expected a folder with one subfolder"),
        ("empty", "data root 'empty' has no class subfolders with images; expected empty/"),
    ],
    ids=["missing", "no-images"],
)
def test_data_root_without_images_is_one_line_naming_the_path(
    workdir: Path, capsys: pytest.CaptureFixture, root: str, expected: str
):
    (workdir / "empty" / "cats").mkdir(parents=True)
    (workdir / "empty" / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *IMAGEFOLDER, f"--data.root={root}", *FAST)
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.splitlines()[0]
    assert line.startswith("error: project.data.ImageFolderDataModule: ") and expected in line


def test_predict_skips_unreadable_files_and_lists_them(trained: Path, workdir: Path):
    folder = workdir / "new"
    folder.mkdir()
    for n, image in enumerate(sorted((workdir / "data" / "digits" / "3").iterdir())[:3]):
        shutil.copy(image, folder / f"good{n}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    truncated = (folder / "good0.png").read_bytes()[:40]
    (folder / "truncated.png").write_bytes(truncated)

    with pytest.warns(UserWarning, match="Skipped 2 images to predict") as warned:
        cli = run_cli(
            "predict", *DEFAULT, f"--data.predict_root={folder}", f"--ckpt_path={trained}", *FAST
        )
    listing = next(str(w.message) for w in warned if "Skipped" in str(w.message))
    assert "broken.png" in listing and "truncated.png" in listing
    rows = (Path(cli.trainer.log_dir) / "predictions.csv").read_text().splitlines()
    assert sorted(Path(row.split(",")[0]).name for row in rows[1:]) == [
        "good0.png",
        "good1.png",
        "good2.png",
    ]


def first_error_line(capsys: pytest.CaptureFixture, *args: str) -> str:
    """Runs the CLI expecting a one-line error; returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.splitlines()[0]


def test_log_folder_that_cannot_be_created_stops_before_training(
    workdir: Path, capsys: pytest.CaptureFixture
):
    Path("blocked").write_text("a file where the log folder should go")
    line = first_error_line(
        capsys, "fit", *DEFAULT, "--trainer.logger.init_args.save_dir=blocked", *FAST
    )
    assert line.startswith("error: cannot create the log folder blocked/default: Not a directory")
    assert "set trainer.logger.init_args.save_dir (now 'blocked') to another folder" in line
    assert not list(workdir.rglob("*.ckpt"))


def test_checkpoint_folder_that_cannot_be_written_stops_before_training(
    workdir: Path, capsys: pytest.CaptureFixture
):
    Path("blocked").write_text("a file where the checkpoint folder should go")
    line = first_error_line(
        capsys,
        "fit",
        *DEFAULT,
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.init_args.dirpath=blocked/ckpts",
        # Another state key than base.yaml's ModelCheckpoint, which Lightning requires.
        "--trainer.callbacks.init_args.every_n_epochs=2",
        *FAST,
    )
    assert line.startswith("error: cannot write checkpoints to ")
    assert "blocked/ckpts: Not a directory" in line and "ModelCheckpoint's dirpath" in line
    assert not list(workdir.rglob("*.ckpt"))
    assert not list(workdir.rglob("events.out.*")), "training must not have started"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through folder permissions")
def test_read_only_log_folder_stops_before_training(workdir: Path, capsys: pytest.CaptureFixture):
    Path("logs").mkdir(mode=0o555)
    line = first_error_line(capsys, "fit", *DEFAULT, *FAST)
    assert "cannot create the log folder logs/default: Permission denied" in line


def test_loggers_started_together_claim_different_versions(tmp_path: Path):
    # Both runs choose a version before either has written anything: the race.
    first = TensorBoardLogger(tmp_path, name="default")
    second = [TensorBoardLogger(tmp_path, name="default"), CSVLogger(tmp_path, name="default")]
    claim_log_versions([first])
    claim_log_versions(second)
    assert first.version == 0
    assert [logger.version for logger in second] == [1, 1]
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == ["version_0", "version_1"]


# -- writing checkpoints ---------------------------------------------------------------------


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path):
    writer = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    writer.save_checkpoint({"state_dict": {"w": torch.ones(10)}}, path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # A file size limit makes writes fail as a full disk would (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(CheckpointWriteError) as error:
            writer.save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert f"could not write checkpoint {path}" in str(error.value)
    assert "Any earlier file at that path is unchanged" in str(error.value)
    kept = torch.load(path, weights_only=True)
    assert torch.equal(kept["state_dict"]["w"], torch.ones(10))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


# -- the training order ------------------------------------------------------------------------


def restored_trainer(epoch: int, processed: int, last: bool = False) -> SimpleNamespace:
    """What a trainer restored from a checkpoint shows the sampler, before training."""
    progress = SimpleNamespace(is_last_batch=last, current=SimpleNamespace(processed=processed))
    loop = SimpleNamespace(restarting=True, epoch_loop=SimpleNamespace(batch_progress=progress))
    return SimpleNamespace(fit_loop=loop, current_epoch=epoch, world_size=1, global_rank=0)


def draws(sampler: ResumableSampler, batch_size: int) -> list[tuple[list[int], float]]:
    """Per batch: its indices, and a random number drawn after them (as augmentation would)."""
    batches, batch = [], []
    for index in sampler:
        batch.append(index)
        if len(batch) == batch_size:
            batches.append((batch, torch.rand(1).item()))
            batch = []
    return batches


def test_per_batch_reseed_draws_what_torch_manual_seed_draws():
    reseed_everything(2**40 + 7)
    ours = (torch.rand(4), torch.randint(0, 100, (3,)), np.random.rand(2), random.random())
    torch.manual_seed(2**40 + 7)
    np.random.seed((2**40 + 7) % 2**32)
    random.seed(2**40 + 7)
    reference = (torch.rand(4), torch.randint(0, 100, (3,)), np.random.rand(2), random.random())
    assert torch.equal(ours[0], reference[0]) and torch.equal(ours[1], reference[1])
    assert ours[2].tolist() == reference[2].tolist() and ours[3] == reference[3]


def test_per_batch_reseed_leaves_only_a_custom_backend_to_torch_manual_seed(
    monkeypatch: pytest.MonkeyPatch,
):
    seeded: list[int] = []
    monkeypatch.setattr(torch, "manual_seed", seeded.append)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: None)
    reseed_everything(5)  # a CPU build: the CPU generator directly
    monkeypatch.setattr(
        torch.accelerator, "current_accelerator", lambda: torch.device("privateuseone")
    )
    reseed_everything(6)  # a PrivateUse1 device: torch's own call seeds it
    assert seeded == [6]


def test_training_order_is_a_new_permutation_each_epoch_and_repeatable():
    sampler = ResumableSampler(torch.utils.data.RandomSampler(range(40)), 8, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(40))
    assert first != second
    torch.manual_seed(123)  # the global state left by whatever ran before
    again = ResumableSampler(torch.utils.data.RandomSampler(range(40)), 8, seed=3)
    again.set_epoch(1)
    assert list(again) == second


@pytest.mark.parametrize(("epoch", "processed", "last"), [(1, 2, False), (0, 5, True)])
def test_restored_run_continues_the_order_and_randomness_where_it_stopped(
    epoch: int, processed: int, last: bool
):
    reference = ResumableSampler(torch.utils.data.RandomSampler(range(40)), 8, seed=3)
    epochs = []
    for number in range(3):
        reference.set_epoch(number)
        epochs.append(draws(reference, 8))

    trainer = restored_trainer(epoch, processed, last)
    resumed = ResumableSampler(torch.utils.data.RandomSampler(range(40)), 8, trainer, seed=3)
    torch.manual_seed(999)  # a restarted process: other generator state
    expected = epochs[epoch + 1] if last else epochs[epoch][processed:]
    assert draws(resumed, 8) == expected
