"""Checkpoints read as data: tensors, numbers and names, never code.

A checkpoint names how its model was built as import paths, which Lightning's
loaders import and build (``weights_only=True`` does not stop that). Before
anything is built, :func:`check_import_paths` accepts only classes under
:data:`TRUSTED_PACKAGES` or named by the user's own config. To load checkpoints
of your own package with ``load_from_checkpoint``, trust it first::

    project.checkpoints.TRUSTED_PACKAGES.add("mypackage")
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import zipfile
from argparse import ArgumentError
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import torch

from project.exceptions import InputValueError

ModuleT = TypeVar("ModuleT")

# A name matches itself and everything under it.
TRUSTED_PACKAGES: set[str] = {"project", "torch.nn", "torch.optim", "torchvision.models"}

# The functions a checkpoint may name to rebuild its model: LightningCLI's.
TRUSTED_INSTANTIATORS = frozenset(
    {"lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module"}
)

# Parts of a checkpoint that Lightning turns into objects; the rest is tensors and numbers.
SETTINGS_KEYS = ("hyper_parameters", "datamodule_hyper_parameters")

# What torch.load raises for a file that is no checkpoint, or one that holds code.
_UNREADABLE = (
    RuntimeError,
    OSError,
    EOFError,
    KeyError,  # torch.load of a file that is no zip archive, nor a legacy pickle
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CheckpointError(InputValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint names code outside the trusted packages and the user's config."""


def read_checkpoint(
    source: str | Path | IO[bytes],
    key: str = "checkpoint",
    mmap: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Loads a Lightning checkpoint with ``weights_only=True`` and checks its shape.

    Args:
        source: A ``.ckpt`` file, a run folder (``logs/<experiment>``: the best
            checkpoint of its newest run), or an open binary file.
        key: The config key that gave the file, for the messages.
        mmap: Map the tensors instead of reading them (local files only).
        name: What to call a stream in the messages (its ``name`` by default).

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointError: The file is no checkpoint, holds pickled code, has no
            ``state_dict``, or has settings that are not a mapping.
    """
    source = run_folder_checkpoint(source, key)
    if name is None:
        name = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "stream")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise FileNotFoundError(
            f"{key}: checkpoint {str(source)!r} does not exist; fix the path, or give the "
            "run folder (logs/<experiment>) to take its newest run's best checkpoint"
        )
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except _UNREADABLE as error:
        message = f"{key}: {name} is not a checkpoint that loads safely: {_unreadable(error)}"
        raise CheckpointError(message) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{key}: {name} is not a Lightning checkpoint (no state_dict)")
    for part in SETTINGS_KEYS:
        if not isinstance(checkpoint.get(part, {}), dict):
            kind = type(checkpoint[part]).__name__
            raise CheckpointError(f"{key}: {name} has {part} of type {kind}, not a mapping")
    return checkpoint


def _unreadable(error: BaseException) -> str:
    """Why torch.load refused a file, in a few words (not torch's advice to load it unsafely)."""
    text = str(error).strip() or type(error).__name__
    marker = "WeightsUnpickler error:"
    if marker in text or text.startswith("Weights only load failed"):
        # The reason follows the marker (on its line, or since torch 2.14 below it), or,
        # without it, has a paragraph of its own after torch's advice.
        after = text.split(marker, 1)[1] if marker in text else text.split("\n", 1)[-1]
        skip = ("Check the documentation", "Please file an issue")
        lines = [line.strip() for line in after.splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(skip)]
        reason = lines[0].split(" Please use")[0].rstrip(".") if lines else "no reason given"
        if reason.startswith("Unsupported operand"):  # bytes that are no pickle at all
            return f"not a file written by torch.save ({reason})"
        return f"it holds pickled objects, not only tensors ({reason})"
    if isinstance(error, KeyError) or text.startswith("mmap can only be used"):
        # What torch.load says of a file that is not the zip archive torch.save writes.
        return "not a file written by torch.save (a Lightning .ckpt is a zip archive)"
    return text.splitlines()[0]


def check_import_paths(
    checkpoint: dict[str, Any],
    source: str | Path,
    key: str = "checkpoint",
    config_classes: Iterable[str] = (),
    skip: Iterable[str] = (),
) -> None:
    """Refuses a checkpoint whose settings name code that is not trusted.

    Every ``class_path`` must be under :data:`TRUSTED_PACKAGES` or in
    ``config_classes``, ``_instantiator`` must be LightningCLI's, and any other
    string that reads as an importable path (``os.system``) must be trusted too.
    Nothing is imported to decide this.

    Args:
        source: The file, and ``key`` the config key that gave it, for the message.
        skip: Top-level settings the caller replaces, so their saved values are never used.

    Raises:
        UntrustedCheckpointError: Naming the file, the key inside it and the path.
    """
    allowed = set(config_classes)
    skipped = set(skip)
    for part in SETTINGS_KEYS:
        settings = {
            k: v
            for k, v in checkpoint.get(part, {}).items()
            if k not in skipped and not _class_names(k, v)
        }
        for where, name, value in _named_strings(settings, part):
            if not _acceptable(name, value, allowed):
                raise UntrustedCheckpointError(
                    f"{key}: {source} is refused: {where} names {value!r}, which is neither "
                    f"in the config nor under the trusted packages {sorted(TRUSTED_PACKAGES)}; "
                    "nothing was imported (to trust a package, add it to "
                    "project.checkpoints.TRUSTED_PACKAGES)"
                )


def class_paths(config: Any) -> set[str]:
    """Every ``class_path`` in a parsed config (dicts and lists, at any depth)."""
    return {value for _, name, value in _named_strings(config, "") if name == "class_path"}


def _named_strings(value: Any, where: str) -> Iterator[tuple[str, str, str]]:
    """(dotted location, key, string) for every string in nested dicts and lists."""
    if isinstance(value, dict):
        items = [(f"{where}.{k}" if where else str(k), str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(f"{where}[{index}]", "", v) for index, v in enumerate(value)]
    else:
        return
    for inner, name, item in items:
        if isinstance(item, str):
            yield inner, name, item
        else:
            yield from _named_strings(item, inner)


def _class_names(key: str, value: Any) -> bool:
    """Whether a top-level setting is the model's class names: labels, not code.

    A class may be called after a module (a folder named ``os.path``), so these
    strings are not read as import paths. Only a list of plain strings under the
    top-level ``class_names`` qualifies: anything nested deeper, or a mapping,
    is checked like every other setting.
    """
    names = isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value)
    return key == "class_names" and names


def _acceptable(name: str, value: str, config_classes: set[str]) -> bool:
    if name == "_instantiator":
        return value in TRUSTED_INSTANTIATORS
    trusted = any(value == p or value.startswith(f"{p}.") for p in TRUSTED_PACKAGES)
    if name in ("class_path", "_class_path"):
        return value in config_classes or ("." in value and trusted)
    return value in config_classes or trusted or not _importable(value)


def _importable(value: str) -> bool:
    """Whether ``value`` reads as an import path whose top module exists (found, not imported)."""
    parts = value.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    try:
        return importlib.util.find_spec(parts[0]) is not None
    except (ImportError, ValueError):
        return False


def load_checked(
    owner: type,
    loader: Callable[..., ModuleT],
    source: str | Path | IO[bytes],
    hparams_file: str | Path | None,
    overrides: dict[str, Any],
    **options: Any,
) -> ModuleT:
    """Runs ``loader`` (``owner``'s ``load_from_checkpoint``) once the checkpoint is checked.

    An ``hparams_file`` replaces the checkpoint's settings, which are then not
    checked (they are not used); ``overrides`` replace single settings.

    Raises:
        CheckpointError: One line naming the file, also when the checkpoint's
            settings do not build the model.
    """
    if isinstance(source, (str, Path)):
        source = run_folder_checkpoint(source, "checkpoint_path")
        name: str | Path = source
        checkpoint = read_checkpoint(source, "checkpoint_path", mmap=True)
    else:
        name = str(getattr(source, "name", "stream"))
        source = io.BytesIO(source.read())
        checkpoint = read_checkpoint(source, "checkpoint_path", name=name)
        source.seek(0)
    if hparams_file is None:
        check_import_paths(checkpoint, name, "checkpoint_path", skip=overrides)
    try:
        return loader(source, hparams_file=hparams_file, weights_only=True, **options, **overrides)
    except CheckpointError:
        raise
    except (ValueError, TypeError, ArgumentError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise CheckpointError(
            f"checkpoint_path: {name} does not build {owner.__name__}: {reason}"
        ) from error


def checkpoint_statistics(checkpoint: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """The input statistics (the model's ``normalize`` buffers) a checkpoint holds, or ``None``."""
    state = checkpoint.get("state_dict", {})
    mean, std = state.get("normalize.mean"), state.get("normalize.std")
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return mean.flatten().tolist(), std.flatten().tolist()
    return None


def network_state(checkpoint: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of the checkpoint's network (the ``net.`` entries, prefix removed)."""
    state = {
        key.removeprefix("net."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    if not state:
        raise ValueError(f"{path} holds no network weights (no 'net.' entries in its state_dict)")
    return state


def checked_ckpt_path(
    path: str | None, config_classes: Iterable[str], runs: Path | None = None
) -> str | None:
    """The file ``ckpt_path`` names, once it has passed :func:`check_import_paths`.

    ``best`` and ``last`` mean the newest run in ``runs`` (``logs/<experiment>``).

    Raises:
        CheckpointError: The file holds code or names untrusted classes, or
            best/last has no ``runs`` (no logger) to look in.
        FileNotFoundError: No run in ``runs`` has such a checkpoint.
    """
    if path in ("best", "last"):
        if runs is None:
            raise CheckpointError(f"ckpt_path: {path} needs a logger's run folders; give a file")
        path = str(run_checkpoint(runs, path, "ckpt_path"))
    if path and "://" not in path and not Path(path).exists():
        raise CheckpointError(
            f"ckpt_path: {path} does not exist; give a .ckpt file, or best or last for the "
            "newest run of this config"
        )
    if path and "://" not in path:
        path = str(run_folder_checkpoint(path, "ckpt_path"))
    if path and "://" not in path and Path(path).is_file():  # remote files: Lightning's checks
        checkpoint = read_checkpoint(path, "ckpt_path", mmap=True)
        check_import_paths(checkpoint, path, "ckpt_path", config_classes=config_classes)
    return path


def run_folder_checkpoint(source: Any, key: str) -> Any:
    """``source`` itself, or for a run folder (``logs/<experiment>``, or a path without a
    suffix) the best checkpoint of its newest run."""
    if isinstance(source, (str, Path)) and (Path(source).is_dir() or not Path(source).suffix):
        return run_checkpoint(Path(source), "best", key)
    return source


def run_checkpoint(runs: Path, which: str, key: str) -> Path:
    """The ``best`` or ``last`` checkpoint of the newest run in ``runs`` (``logs/<experiment>``).

    The best file is the one the last checkpoint's ModelCheckpoint state names.
    """
    found = sorted(runs.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        root = Path(__file__).resolve().parents[1]
        writers = sorted(root.glob(f"configs/**/{runs.name}.yaml"))
        first = "train that model first or give a .ckpt file"
        if writers:
            first = f"run {writers[0].relative_to(root)} first (its first lines give the command)"
        raise FileNotFoundError(
            f"{key}: no run in {runs} has a checkpoint (looked for {runs}/*/checkpoints/"
            f"last.ckpt); {first}"
        )
    last = found[-1]
    if which == "last":
        return last
    callbacks = read_checkpoint(last, key, mmap=True).get("callbacks")
    best = next(
        (
            value.get("best_model_path")
            for name, value in (callbacks if isinstance(callbacks, dict) else {}).items()
            if str(name).startswith("ModelCheckpoint") and isinstance(value, dict)
        ),
        None,
    )
    if best and not Path(best).is_file():
        # A relative path was relative to that run's working folder; a moved run
        # folder keeps its files side by side.
        best = str(last.parent / Path(best).name)
    if not best or not Path(best).is_file():
        raise FileNotFoundError(
            f"{key}: {last} names no best checkpoint that still exists ({best!r}); "
            "give a .ckpt file"
        )
    return Path(best)
