"""Shared test set-up: offline guard, CPU only, runs in a temporary folder.

Every test runs with the network blocked (loopback stays open for DDP's
rendezvous), with the working directory in a temporary folder (so ``logs/``
and ``data/`` land there) and ``TORCH_HOME`` pointing at an empty folder, so a
test that would download weights or data fails loudly instead.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (make test) every worker is a process of its own: one thread
# each, and one for the processes tests start, so workers do not fight over the
# cores (waiting torch threads spin and slow each other down).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# Trainer overrides that turn any config into a seconds-long CPU run.
FAST = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.limit_predict_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


# The default run, and the default run with one preset stacked on it.
DEFAULT = ["--config", "configs/default.yaml"]


def preset(name: str) -> list[str]:
    return [*DEFAULT, "--config", f"configs/presets/{name}.yaml"]


def is_overlay(name: str) -> bool:
    """Whether a config under ``configs/`` changes only a few keys of the default config.

    A whole config names its data and its model classes; presets and the
    digits experiments do not, and run stacked on ``configs/default.yaml``.
    """
    import yaml

    config = yaml.safe_load((CONFIGS / name).read_text()) or {}
    return not all(
        isinstance(config.get(k), dict) and "class_path" in config[k] for k in ("data", "model")
    )


# An overlay of another whole config than the default names it in its header.
STACKS_ON = re.compile(r"^# Stacks on (configs/\S+\.yaml)", re.MULTILINE)


def base_of(name: str) -> list[str]:
    """The ``--config`` arguments that come before ``configs/<name>``.

    None for a whole config; for an overlay, the config its header says it stacks
    on (``# Stacks on configs/experiments/<name>.yaml``), else the default.
    """
    if not is_overlay(name):
        return []
    found = STACKS_ON.search((CONFIGS / name).read_text())
    return ["--config", found.group(1)] if found else DEFAULT


def experiment(name: str) -> list[str]:
    """The ``--config`` arguments that run ``configs/experiments/<name>.yaml`` (see its header)."""
    path = f"experiments/{name}.yaml"
    return [*base_of(path), "--config", f"configs/{path}"]


def find_callback(cli, kind: type):
    """The trainer's callback of type ``kind``."""
    return next(c for c in cli.trainer.callbacks if isinstance(c, kind))


class NetworkAccessError(RuntimeError):
    """Raised when a test tries to reach anything beyond this machine."""


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple):  # unix sockets
        return True
    host = "" if address[0] is None else str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Blocks non-loopback connections; gives each test an empty TORCH_HOME and cache folder."""
    real_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address: object) -> object:
        if not _is_local(address):
            raise NetworkAccessError(f"tests run offline: connection to {address!r} blocked")
        return real_connect(sock, address)

    real_getaddrinfo = socket.getaddrinfo

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if not _is_local((host,)):
            raise NetworkAccessError(f"tests run offline: lookup of {host!r} blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    # Lightning stops its loggers propagating when it is imported before any
    # root handler exists (at collection); caplog needs the records to reach root.
    for name in ("lightning.pytorch", "lightning.fabric"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    # Remembered file checks (project.data.check) stay inside the test's folders.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache_home")))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK")


@pytest.fixture(autouse=True)
def training_is_marked_slow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test that trains (calls ``Trainer.fit``) must be marked slow: test-fast runs the rest."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import functools

    import lightning.pytorch as L

    # The signature and docstring stay: LightningCLI builds the fit parser from them.
    @functools.wraps(L.Trainer.fit)
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{request.node.nodeid} trains: mark it @pytest.mark.slow")

    monkeypatch.setattr(L.Trainer, "fit", refuse)


@pytest.fixture(autouse=True)
def no_leftover_process_group():
    """Ends a process group a test's in-process DDP run left behind, and its variables.

    A ``strategy: ddp`` run with one device in this process sets MASTER_PORT and
    keeps its store listening there; a later DDP subprocess inheriting that port
    would fail with EADDRINUSE.
    """
    before = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def digits_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits image folder, written once per test session."""
    from project.data.digits import write_digits

    root = tmp_path_factory.mktemp("shared") / "digits"
    write_digits(root)
    return root


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


def make_workdir(folder: Path, digits_tree: Path) -> Path:
    """Gives ``folder`` the repository's ``configs/`` and the digits in ``data/digits``.

    The digit files are hard links to the session's tree (a tenth of a copy's
    time, which every test using a working folder paid): a test may add,
    delete or replace files there, but must not write into one in place.
    """
    shutil.copytree(digits_tree, folder / "data" / "digits", copy_function=_link_or_copy)
    os.symlink(CONFIGS, folder / "configs")
    return folder


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits_tree: Path) -> Path:
    """A fresh working directory with ``configs/`` and the digits already in ``data/``."""
    monkeypatch.chdir(make_workdir(tmp_path, digits_tree))
    return tmp_path


def run_cli(*args: str):
    """Runs ``python -m project ARGS`` in-process; returns the LightningCLI object."""
    from project.cli import main

    return main(list(args))


def tensorboard_tags(log_dir: Path) -> tuple[set[str], set[str]]:
    """The scalar and image tags a run's TensorBoard event files hold."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 1})
    events.Reload()
    tags = events.Tags()
    return set(tags["scalars"]), set(tags["images"])


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, digits_tree: Path) -> Path:
    """The last checkpoint of a short fit of the default config (10 digit classes)."""
    folder = make_workdir(tmp_path_factory.mktemp("trained"), digits_tree)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli = run_cli("fit", "--config", "configs/default.yaml", *FAST, "--test_after_fit=false")
    from project.callbacks import AtomicCheckpointIO, SaveOnInterrupt

    # Written as every fit writes: atomically, with interrupt handling on.
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert any(isinstance(c, SaveOnInterrupt) for c in cli.trainer.callbacks)
    return folder / cli.trainer.checkpoint_callback.last_model_path


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The probe module of ``crafted.py`` on ``sys.path``; yields the file it records in."""
    import sys

    from crafted import PROBE, PROBE_SOURCE

    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / f"{PROBE}.py").write_text(PROBE_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder / f"{PROBE}.ran"
    sys.modules.pop(PROBE, None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers and rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The files that take longest run first, so that under pytest-xdist (make test) no worker
# is left with one of them at the end while the other waits.
LONGEST_FIRST = ("test_starter.py", "test_notebooks.py", "test_distributed_slurm.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
