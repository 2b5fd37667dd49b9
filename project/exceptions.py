"""The errors a user's input causes: what they gave (an argument, a config file, a data
folder, a dataset file, a checkpoint, a device) is wrong, and the message, one line,
names it and says what to do.

``python -m project`` prints such an error as ``error: <message>`` and exits with
status 2, at whatever stage it surfaces; ``PROJECT_DEBUG=1`` shows the traceback
instead. Any other exception is a bug and keeps its traceback. The subclasses are
also the built-in exceptions Python code expects (``ValueError``,
``FileNotFoundError``, ``OSError``), so ``except ValueError`` still catches them.
"""

from __future__ import annotations


class InputError(Exception):
    """Something the user gave is wrong; the message names it in one line."""


class InputValueError(InputError, ValueError):
    """A value, or the content of a file the user named, cannot be used."""


class InputFileError(InputError, FileNotFoundError):
    """A file or folder the user named is missing, or holds nothing usable."""


class ProjectWarning(UserWarning):
    """Something in the user's input that the run works around; ``python -m project``
    prints it as ``warning: <message>``, without the file and line that raised it."""
