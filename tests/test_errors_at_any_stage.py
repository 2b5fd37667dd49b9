"""A mistake in what the user gives is one line and status 2, whatever stage finds it.

The cases cover parse time, construction, ``prepare_data``, ``setup``, checkpoint
loading and the trainer's device check. One per stage runs ``python -m project`` in
a subprocess, as a user would; the others run ``main()`` in this process inside the
same door (``project.errors.at_the_door``). The line names the key, value, file or
folder; there is no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

TESTS = Path(__file__).resolve().parent


class BreakFilesAfter(L.Callback):
    """Overwrites every training image with bytes that do not decode, after ``steps`` steps."""

    def __init__(self, steps: int = 2) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.steps:
            for path in trainer.datamodule.datasets["train"].paths:
                os.unlink(path)  # the workdir's files are hard links: never write through them
                Path(path).write_bytes(b"not an image any more")


# A folder of two classes whose only files do not decode, checked strictly.
STRICT_BROKEN_IMAGES = [
    *["fit", "--config", "configs/experiments/imagefolder.yaml", "--data.root", "broken-images"],
    *["--data.init_args.strict", "true"],
]
# One mistake per stage (parsing, a config file's syntax, setup, the trainer), each run as a
# user runs it: python -m project in a process of its own.
CASES = {
    "unknown key": (
        ["fit", "--config", "configs/default.yaml", "--trainer.max_epoch", "5"],
        "trainer.max_epoch",
    ),
    "YAML syntax error": (["fit", "--config", "broken.yaml"], "broken.yaml:4:"),
    "unusable image files with data.strict (setup)": (
        STRICT_BROKEN_IMAGES,
        "2 samples cannot be used (data.strict is true)",
    ),
    "a GPU the machine lacks (trainer)": (
        ["fit", "--config", "configs/default.yaml", "--trainer.accelerator", "gpu"],
        "trainer.accelerator: 'gpu' needs a CUDA GPU and this machine has none",
    ),
}
# The other mistakes, run in this process through the same door: main() inside
# project.errors.at_the_door, as python -m project runs it, which costs no
# start-up of their own.
MORE_CASES = {
    "misspelled class_path": (
        [
            "fit",
            "--config",
            "configs/default.yaml",
            "--model.init_args.net",
            "project.models.ConvNot",
        ],
        "project.models.ConvNot",
    ),
    "missing data root folder": (
        [
            "fit",
            "--config",
            "configs/experiments/imagefolder.yaml",
            "--data.root",
            "no-such-folder",
        ],
        "no-such-folder",
    ),
    "a text file as ckpt_path": (
        ["test", "--config", "configs/default.yaml", "--ckpt_path", "notes/readme.txt"],
        "notes/readme.txt",
    ),
    "an unknown precision": (
        ["fit", "--config", "configs/default.yaml", "--trainer.precision", "17"],
        "trainer.precision",
    ),
    "a weight decay that is no number": (
        [
            "fit",
            "--config",
            "configs/default.yaml",
            "--model.init_args.optimizer.init_args.weight_decay",
            "lots",
        ],
        "weight_decay",
    ),
    "missing config file": (["fit", "--config", "configs/nonesuch.yaml"], "nonesuch.yaml"),
    "a config saved in Latin-1, not UTF-8": (
        ["fit", "--config", "configs/default.yaml", "--config", "latin1.yaml"],
        "latin1.yaml: not UTF-8 text (byte 0xe9",
    ),
    "checkpoint file missing": (
        ["predict", "--config", "configs/default.yaml", "--ckpt_path", "/no/such.ckpt"],
        "/no/such.ckpt",
    ),
    "negative batch size": (
        ["fit", "--config", "configs/default.yaml", "--data.init_args.batch_size", "-1"],
        "data.batch_size",
    ),
    "empty folder to predict (setup)": (
        [
            "predict",
            "--config",
            "configs/default.yaml",
            "--ckpt_path",
            "TRAINED",
            "--data.init_args.predict_root",
            "empty",
        ],
        "'empty' holds no image files",
    ),
    "negative worker count": (
        ["fit", "--config", "configs/default.yaml", "--data.init_args.num_workers", "-2"],
        "data.num_workers",
    ),
    "folder of no images (setup)": (
        ["fit", "--config", "configs/experiments/imagefolder.yaml", "--data.root", "notes"],
        "notes",
    ),
    "overlay without its base config": (
        ["fit", "--config", "configs/experiments/digits-0to4-pretrain.yaml"],
        "configs/default.yaml",
    ),
    "a list where a number is expected": (
        ["fit", "--config", "configs/default.yaml", "--trainer.max_epochs", "[1, 2]"],
        "trainer.max_epochs",
    ),
    "a checkpoint of another network": (
        [
            "test",
            "--config",
            "configs/default.yaml",
            "--ckpt_path",
            "TRAINED",
            "--model.init_args.net.init_args.widths",
            "[16, 32]",
        ],
        "holds another network than the config builds: widths [32, 64] there, [16, 32] here",
    ),
    "a class_path whose module raises on import": (
        ["fit", "--config", "configs/default.yaml", "--model.init_args.net", "boom.Net"],
        "boom at import",
    ),
    "an augmentation preset that does not exist": (
        ["fit", "--config", "configs/default.yaml", "--data.init_args.augment", "wild"],
        "data.init_args.augment",
    ),
    "a validation fraction above 1": (
        ["fit", "--config", "configs/default.yaml", "--data.init_args.val_fraction", "1.5"],
        "data.val_fraction",
    ),
    "an image size of 0": (
        ["fit", "--config", "configs/default.yaml", "--data.init_args.image_size", "0"],
        "data.image_size",
    ),
    "a class the data does not have": (
        ["fit", "--config", "configs/default.yaml", "--data.init_args.classes", "[cat]"],
        "['cat'] are not in the data",
    ),
    "a file as the folder to predict": (
        [
            "predict",
            "--config",
            "configs/default.yaml",
            "--ckpt_path",
            "TRAINED",
            "--data.init_args.predict_root",
            "notes/readme.txt",
        ],
        "'notes/readme.txt' is not a folder of images",
    ),
}
BROKEN_YAML = "model:\n  init_args:\n    net: 3\n     loss: x\n"


def user_files(workdir: Path) -> None:
    """The files the mistakes name: a broken YAML file, folders, a module."""
    (workdir / "broken.yaml").write_text(BROKEN_YAML)
    (workdir / "latin1.yaml").write_bytes("# résumé\ntrainer:\n  max_epochs: 0\n".encode("latin-1"))
    (workdir / "empty").mkdir()
    (workdir / "notes").mkdir()
    (workdir / "notes" / "readme.txt").write_text("no images here")
    (workdir / "boom.py").write_text('raise RuntimeError("boom at import")\n')
    for name in ("a", "b"):  # not images, though named .png
        (workdir / "broken-images" / name).mkdir(parents=True)
        (workdir / "broken-images" / name / "1.png").write_text("not an image")


def assert_one_line(status: int | str | None, stderr: str, named: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert len(lines) == 1 and named in lines[0], stderr[-2000:]


def run_project(workdir: Path, *args: str, **variables: str | None) -> subprocess.CompletedProcess:
    """``python -m project ARGS`` in ``workdir``, as a user runs it; ``variables`` set or
    (``None``) remove environment variables."""
    env = {**os.environ, **variables}
    env = {name: value for name, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, "-m", "project", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow  # runs processes
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_mistake_is_one_line_and_status_2(case: str, workdir: Path, trained: Path):
    if "GPU" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    args, named = CASES[case]
    args = [str(trained) if arg == "TRAINED" else arg for arg in args]
    user_files(workdir)
    result = run_project(
        workdir, *args, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(workdir), PROJECT_DEBUG=None
    )
    assert_one_line(result.returncode, result.stderr, named)


@pytest.mark.slow  # some of them start fit
@pytest.mark.parametrize("case", sorted(MORE_CASES))
def test_more_mistakes_are_one_line_at_the_door(
    case: str,
    workdir: Path,
    trained: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    from project.cli import main
    from project.errors import at_the_door

    args, named = MORE_CASES[case]
    args = [str(trained) if arg == "TRAINED" else arg for arg in args]
    user_files(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delenv("PROJECT_DEBUG", raising=False)
    monkeypatch.delitem(sys.modules, "boom", raising=False)
    with pytest.raises(SystemExit) as stopped, at_the_door():
        main([*args, "--trainer.enable_progress_bar=false"])
    assert_one_line(stopped.value.code, capsys.readouterr().err, named)


@pytest.mark.slow  # runs a process
def test_project_debug_shows_the_traceback(workdir: Path):
    user_files(workdir)
    result = run_project(
        workdir,
        *STRICT_BROKEN_IMAGES,
        PROJECT_DEBUG="1",
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "InputValueError" in result.stderr


@pytest.mark.slow  # trains one batch in a process
def test_the_project_s_warnings_are_one_line_and_lightning_s_leafspec_notice_is_gone(
    workdir: Path,
):
    import shutil

    for digit in ("0", "1"):
        shutil.copytree(workdir / "data" / "digits" / digit, workdir / "images" / digit)
    (workdir / "images" / "empty").mkdir()
    result = run_project(
        workdir,
        *["fit", "--config", "configs/experiments/imagefolder.yaml", "--data.root", "images"],
        *["--data.init_args.image_size", "32", "--trainer.fast_dev_run", "true"],
        *["--trainer.accelerator", "cpu"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: class folders without images left out: empty" in result.stderr
    assert "UserWarning" not in result.stderr and "rank_zero_warn(" not in result.stderr
    assert "LeafSpec" not in result.stderr


@pytest.mark.slow  # trains in a process
def test_a_mistake_found_mid_run_keeps_the_training_done_in_last_ckpt(workdir: Path):
    result = run_project(
        workdir,
        *["fit", "--config", "configs/default.yaml", "--trainer.accelerator", "cpu"],
        # Files read from disk at every access, so the broken ones are found mid-epoch.
        *["--data.init_args.cache", "false", "--data.init_args.check_files", "false"],
        *["--model.init_args.mean", "[0.3]", "--model.init_args.std", "[0.4]"],
        "--trainer.callbacks+=test_errors_at_any_stage.BreakFilesAfter",
        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    )
    assert_one_line(result.returncode, result.stderr, "data/digits/")
    assert ".png" in result.stderr
    (last,) = workdir.glob("logs/default/version_0/checkpoints/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
