"""Crafted checkpoints: each names a probe module that records its import and every build.

Shared by the core's trust tests (``test_checkpoint_trust.py``) and the leaves'
(transfer, distillation); the fixtures that give them a checkpoint and the
probe are in ``conftest.py`` (``trained_checkpoint``, ``probe``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

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
    # A class hidden under a nested key named like the model's class names (a trusted class's
    # dict[str, Any] argument would hand it to jsonargparse, which builds it).
    "nested class_names": (
        _set(
            "net",
            {
                "class_path": "project.models.ConvNet",
                "init_args": {"class_names": {"class_path": f"{PROBE}.Net"}},
            },
        ),
        "net.init_args.class_names.class_path",
    ),
    "_class_path": (_set("_class_path", f"{PROBE}.Model"), "_class_path"),
    "_instantiator": (_set("_instantiator", f"{PROBE}.instantiate"), "_instantiator"),
    "pickled": (_pickled, None),
}


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


def assert_loader_refuses(
    loader: type, case: str, trained: Path, probe: Path, folder: Path
) -> None:
    """``loader.load_from_checkpoint`` refuses the crafted file, as a path and as a stream."""
    from project.checkpoints import CheckpointError

    crafted = craft(trained, case, probe, folder / "crafted.ckpt")
    with pytest.raises(CheckpointError) as error:
        loader.load_from_checkpoint(crafted)
    assert_names(str(error.value), crafted, case)
    assert_nothing_ran(probe)
    with crafted.open("rb") as stream, pytest.raises(CheckpointError) as error:
        loader.load_from_checkpoint(stream)
    assert_names(str(error.value), crafted, case)
    assert_nothing_ran(probe)
