"""A checkpoint is data: wherever the template reads one, nothing it names is imported or built.

Each crafted checkpoint names a probe module that records its import and every
constructor call in a file. A refused checkpoint must leave no record, and
the user must get one line naming the file, the key and the import path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import FAST, make_workdir, run_cli

from project import checkpoints
from project.checkpoints import CheckpointError
from project.models import ConvNet, DistillationClassifier, ImageClassifier, TransferClassifier

DEFAULT = ["--config", "configs/default.yaml"]
PROBE = "ckpt_probe"

PROBE_SOURCE = '''
"""Records, in a file beside it, that it was imported and what was built from it."""
from pathlib import Path

import torch

from project.models import ImageClassifier

RECORD = Path(__file__).with_suffix(".ran")


def ran(what):
    with RECORD.open("a") as file:
        file.write(what + "\\n")


ran("import")


class Net(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        ran("Net")


class Loss(torch.nn.CrossEntropyLoss):
    def __init__(self, *args, **kwargs):
        super().__init__()
        ran("Loss")


class Optimizer(torch.optim.SGD):
    def __init__(self, *args, **kwargs):
        ran("Optimizer")
        super().__init__(*args, **kwargs)


class Scheduler(torch.optim.lr_scheduler.StepLR):
    def __init__(self, *args, **kwargs):
        ran("Scheduler")
        super().__init__(*args, **kwargs)


class Model(ImageClassifier):
    def __init__(self, *args, **kwargs):
        ran("Model")
        super().__init__(*args, **kwargs)


def instantiate(cls, config):
    ran("instantiate")
    return cls(**config)


def factor(epoch):
    ran("factor")
    return 1.0
'''


class Payload:
    """Unpickling this object creates a file: the proof that code from a checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _set(key: str, value: object) -> Callable[[dict, Path], None]:
    def edit(hyper_parameters: dict, record: Path) -> None:
        hyper_parameters[key] = value

    return edit


def _pickled(hyper_parameters: dict, record: Path) -> None:
    hyper_parameters["net"] = Payload(record)


# What each crafted checkpoint changes, and what the refusal must name.
CRAFTED = {
    "net": (_set("net", {"class_path": f"{PROBE}.Net", "init_args": {}}), "net.class_path"),
    "loss": (_set("loss", {"class_path": f"{PROBE}.Loss"}), "loss.class_path"),
    "optimizer": (
        _set("optimizer", {"class_path": f"{PROBE}.Optimizer", "init_args": {"lr": 0.1}}),
        "optimizer.class_path",
    ),
    "scheduler": (
        _set("scheduler", {"class_path": f"{PROBE}.Scheduler", "init_args": {"step_size": 1}}),
        "scheduler.class_path",
    ),
    # A trusted class, handed a function of the probe's by name.
    "callable": (
        _set(
            "scheduler",
            {
                "class_path": "torch.optim.lr_scheduler.LambdaLR",
                "init_args": {"lr_lambda": f"{PROBE}.factor"},
            },
        ),
        "scheduler.init_args.lr_lambda",
    ),
    "_class_path": (_set("_class_path", f"{PROBE}.Model"), "_class_path"),
    "_instantiator": (_set("_instantiator", f"{PROBE}.instantiate"), "_instantiator"),
    "pickled": (_pickled, None),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, digits_tree: Path) -> Path:
    """The last checkpoint of a short fit of the default config."""
    folder = make_workdir(tmp_path_factory.mktemp("trained"), digits_tree)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli = run_cli("fit", *DEFAULT, *FAST, "--test_after_fit=false")
    return folder / cli.trainer.checkpoint_callback.last_model_path


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The probe module on ``sys.path``; yields the file in which it records what ran."""
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / f"{PROBE}.py").write_text(PROBE_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder / f"{PROBE}.ran"
    sys.modules.pop(PROBE, None)


def craft(trained: Path, case: str, record: Path, target: Path) -> Path:
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    edit, _ = CRAFTED[case]
    edit(checkpoint["hyper_parameters"], record)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


def assert_nothing_ran(record: Path) -> None:
    ran = record.read_text().split() if record.exists() else []
    assert not ran, f"the checkpoint's code ran: {ran}"
    assert PROBE not in sys.modules


def assert_names(message: str, path: Path | str, case: str) -> None:
    assert len(message.splitlines()) == 1, message
    assert str(path) in message
    _, key = CRAFTED[case]
    if key is None:
        assert "holds pickled objects" in message
        assert "weights_only" not in message, "no advice to load it unsafely"
    else:
        assert f"hyper_parameters.{key} names '{PROBE}." in message
        assert "TRUSTED_PACKAGES" in message


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


@pytest.mark.parametrize("loader", [ImageClassifier, TransferClassifier])
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_python_loaders_refuse_a_crafted_checkpoint(
    case: str, loader: type[ImageClassifier], trained: Path, probe: Path, tmp_path: Path
):
    crafted = craft(trained, case, probe, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError) as error:
        loader.load_from_checkpoint(crafted)
    assert_names(str(error.value), crafted, case)
    assert_nothing_ran(probe)
    # The same file as an open stream.
    with crafted.open("rb") as stream, pytest.raises(CheckpointError) as error:
        loader.load_from_checkpoint(stream)
    assert_names(str(error.value), crafted, case)
    assert_nothing_ran(probe)


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


def test_the_distillation_teacher_and_init_from_build_nothing_a_checkpoint_names(
    trained: Path, probe: Path, tmp_path: Path
):
    crafted = craft(trained, "net", probe, tmp_path / "crafted.ckpt")
    student = ConvNet(10, in_channels=1, widths=[8, 16])
    with pytest.raises(CheckpointError) as error:
        DistillationClassifier(student, 10, str(crafted))
    assert "teacher_checkpoint" in str(error.value)
    assert_names(str(error.value), crafted, "net")
    # init_from takes only weights and class names: nothing in its settings is built.
    net = ConvNet(10, in_channels=1, widths=[32, 64, 128])
    model = TransferClassifier(net, 10, init_from=str(crafted))
    saved = torch.load(trained, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.net.features[0].weight, saved["net.features.0.weight"])
    assert_nothing_ran(probe)

    pickled = craft(trained, "pickled", probe, tmp_path / "pickled.ckpt")
    for build in (
        lambda: DistillationClassifier(student, 10, str(pickled)),
        lambda: TransferClassifier(net, 10, init_from=str(pickled)),
    ):
        with pytest.raises(CheckpointError) as error:
            build()
        assert_names(str(error.value), pickled, "pickled")
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
    assert cli.model.loss.label_smoothing == 0.0, "the config's loss, not the checkpoint's"
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
