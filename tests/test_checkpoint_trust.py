"""A checkpoint is data: wherever the template reads one, nothing it names is imported or built.

Each crafted checkpoint names a probe module that records its import and every
constructor call in a file. A refused checkpoint must leave no record, and
the user must get one line naming the file, the key and the import path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST, run_cli
from crafted import CRAFTED, PROBE, assert_loader_refuses, assert_names, assert_nothing_ran, craft

from project import checkpoints
from project.checkpoints import CheckpointError
from project.models import ImageClassifier

DEFAULT = ["--config", "configs/default.yaml"]


def cli_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith("error: ckpt_path: ")
    return error[0].removeprefix("error: ")


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict", "fit"])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_every_subcommand_refuses_a_crafted_checkpoint_file(
    case: str,
    subcommand: str,
    trained: Path,
    probe: Path,
    workdir: Path,
    capsys: pytest.CaptureFixture,
):
    crafted = craft(trained, case, probe, workdir / "crafted.ckpt")
    message = cli_error(capsys, subcommand, *DEFAULT, "--ckpt_path=crafted.ckpt", *FAST)
    assert_names(message, "crafted.ckpt", case)
    assert_nothing_ran(probe)
    assert crafted.is_file()


@pytest.mark.parametrize(("subcommand", "name"), [("fit", "last"), ("test", "best")])
@pytest.mark.parametrize("case", ["net", "pickled"])
def test_a_crafted_checkpoint_found_as_best_or_last_is_refused(
    case: str,
    subcommand: str,
    name: str,
    trained: Path,
    probe: Path,
    workdir: Path,
    capsys: pytest.CaptureFixture,
):
    run = Path("logs/default/version_0/checkpoints")
    if name == "last":
        crafted = craft(trained, case, probe, run / "last.ckpt")
    else:
        # A sound last.ckpt whose ModelCheckpoint names the crafted file as its best.
        crafted = craft(trained, case, probe, run / "epoch00.ckpt")
        last = torch.load(trained, map_location="cpu", weights_only=True)
        for state in last["callbacks"].values():
            if "best_model_path" in state:
                state["best_model_path"] = str(crafted)
        torch.save(last, run / "last.ckpt")
    message = cli_error(capsys, subcommand, *DEFAULT, f"--ckpt_path={name}", *FAST)
    assert_names(message, crafted, case)
    assert_nothing_ran(probe)


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_python_loaders_refuse_a_crafted_checkpoint(
    case: str, trained: Path, probe: Path, tmp_path: Path
):
    assert_loader_refuses(ImageClassifier, case, trained, probe, tmp_path)


def test_the_probe_records_what_a_trusting_loader_builds(
    trained: Path, probe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The check above is what stands between a checkpoint and its code.
    crafted = craft(trained, "net", probe, tmp_path / "crafted.ckpt")
    monkeypatch.setattr(checkpoints, "TRUSTED_PACKAGES", {*checkpoints.TRUSTED_PACKAGES, PROBE})
    with pytest.raises(CheckpointError, match="holds another network"):
        ImageClassifier.load_from_checkpoint(crafted)
    assert probe.read_text().split() == ["import", "Net"]


def test_a_keyword_argument_replaces_what_it_names(trained: Path, probe: Path, tmp_path: Path):
    crafted = craft(trained, "loss", probe, tmp_path / "crafted.ckpt")
    model = ImageClassifier.load_from_checkpoint(crafted, loss=torch.nn.CrossEntropyLoss())
    assert type(model.loss) is torch.nn.CrossEntropyLoss
    assert_nothing_ran(probe)


def test_settings_that_do_not_build_the_model_are_one_line(trained: Path, tmp_path: Path):
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["net"]["init_args"]["widthz"] = [1]
    torch.save(checkpoint, tmp_path / "typo.ckpt")
    with pytest.raises(CheckpointError) as error:
        ImageClassifier.load_from_checkpoint(tmp_path / "typo.ckpt")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and "typo.ckpt" in message
    assert "does not build ImageClassifier" in message

    checkpoint["hyper_parameters"] = ["not", "a", "mapping"]
    torch.save(checkpoint, tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"list\.ckpt has hyper_parameters of type list"):
        ImageClassifier.load_from_checkpoint(tmp_path / "list.ckpt")


def test_the_command_line_ignores_the_checkpoint_settings_and_uses_the_config(
    trained: Path, workdir: Path
):
    # A checkpoint whose saved settings disagree with the config it is used with.
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["loss"]["init_args"]["label_smoothing"] = 0.3
    torch.save(checkpoint, "other.ckpt")
    cli = run_cli("test", *DEFAULT, "--ckpt_path=other.ckpt", *FAST)
    assert cli.model.loss.label_smoothing == 0.1, "the config's loss, not the checkpoint's"
    assert cli.trainer.state.finished


def test_a_class_the_config_names_is_trusted_on_the_command_line(
    trained: Path, probe: Path, workdir: Path
):
    # The user's own loss, in the config and in the checkpoint trained with it.
    craft(trained, "loss", probe, workdir / "own.ckpt")
    loss = f"--model.init_args.loss={PROBE}.Loss"
    cli = run_cli("validate", *DEFAULT, loss, "--ckpt_path=own.ckpt", *FAST)
    assert cli.trainer.state.finished
    assert probe.read_text().split() == ["import", "Loss"], "built once, by the config"


def test_class_names_that_read_like_modules_are_labels_not_code():
    from project.checkpoints import UntrustedCheckpointError, check_import_paths

    labels = {"hyper_parameters": {"class_names": ["os.path", "numpy", "cat"]}, "state_dict": {}}
    check_import_paths(labels, "folders.ckpt")  # a folder may be named like a module
    hidden = {"hyper_parameters": {"class_names": [{"class_path": "os.system"}]}, "state_dict": {}}
    with pytest.raises(UntrustedCheckpointError, match=r"class_names\[0\]\.class_path names 'os"):
        check_import_paths(hidden, "hidden.ckpt")


@pytest.mark.parametrize("mmap", [False, True])
def test_a_pickle_or_a_text_file_is_refused_in_one_line_without_unsafe_advice(
    tmp_path: Path, mmap: bool
):
    from crafted import Payload

    from project.checkpoints import read_checkpoint

    pickled, text = tmp_path / "pickled.ckpt", tmp_path / "notes.ckpt"
    record = tmp_path / "ran"
    torch.save(Payload(record), pickled)  # the whole file one object with a __reduce__
    text.write_text("not a checkpoint")
    for path, reason in [(pickled, "holds pickled objects"), (text, "not a file written by")]:
        with pytest.raises(CheckpointError) as error:
            read_checkpoint(path, mmap=mmap)
        message = str(error.value)
        assert len(message.splitlines()) == 1 and str(path) in message and reason in message
        assert "weights_only" not in message and "torch.save your checkpoint" not in message
    assert not record.exists()
