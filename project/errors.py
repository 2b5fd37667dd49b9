"""One-line errors for the command line: the key that is wrong, then what is wrong with it.

The parser's errors are shortened to the key and the reason, and a config file
that is not YAML is named with its line (:mod:`project.parser_messages`, imported
only when there is an error; ``JSONARGPARSE_DEBUG=1`` shows jsonargparse's whole
message); input errors found at any later stage become one line at the door
(:func:`at_the_door`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser

from project.exceptions import InputError, ProjectWarning

# Set to show the traceback of an input error instead of its one line.
DEBUG_VARIABLE = "PROJECT_DEBUG"


class ProjectArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors are one line naming the key; no abbreviated options.

    ``--trainer.max_epoch`` is an error rather than a silent ``--trainer.max_epochs``.

    Args:
        command_line: The arguments parsed, so that an error can name a config
            file that is not valid YAML (jsonargparse names neither file nor line).
    """

    def __init__(self, *args: Any, command_line: Sequence[Any] = (), **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.command_line = list(command_line)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # Nested parsers report to their parent by raising; leave that as it is.
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        from project.parser_messages import error_report

        sys.stderr.write(error_report(self, message, ex))
        self.exit(2)


@contextlib.contextmanager
def at_the_door(command: str = "python -m project") -> Iterator[None]:
    """Turns an input error raised at any stage of a command-line run into one line and status 2.

    Input errors are :class:`~project.exceptions.InputError` (the project's own) and
    Lightning's ``MisconfigurationException`` (a trainer setting Lightning refuses;
    ``device_error`` catches the common one, a GPU the machine lacks, earlier and by
    name); every other exception is a bug and keeps its traceback. ``PROJECT_DEBUG=1``
    shows the traceback of these too.
    The project's own warnings print as ``warning: <message>``, without the file and
    line that raised them.
    """
    shown = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, ProjectWarning):
            return f"warning: {message}\n"
        return shown(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning
    try:
        yield
    except (InputError, MisconfigurationException) as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        line = " ".join(str(error).split())
        if isinstance(error, MisconfigurationException):
            line += " (Lightning's check of the trainer settings)"
        sys.stderr.write(
            f"error: {line}\n  ({command} --help lists the options; "
            f"{DEBUG_VARIABLE}=1 shows the traceback)\n"
        )
        raise SystemExit(2) from None
    finally:
        warnings.formatwarning = shown


def device_error(trainer: Any) -> str | None:
    """What this machine lacks for ``trainer.accelerator`` and ``trainer.devices``, or None.

    Lightning finds out too, but only as ``No supported gpu backend found!``, which
    names neither the setting nor what to do.
    """
    import torch

    accelerator = str(trainer.get("accelerator") or "auto").lower()
    if accelerator not in ("gpu", "cuda"):
        return None
    found, devices = torch.cuda.device_count(), trainer.get("devices")
    if found == 0:
        return (
            f"trainer.accelerator: {accelerator!r} needs a CUDA GPU and this machine has none; "
            "use cpu, or auto to take a GPU where there is one"
        )
    if isinstance(devices, int) and devices > found:
        return f"trainer.devices: {devices} GPUs asked for, this machine has {found}"
    return None
