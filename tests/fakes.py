"""Files that configs expect on a user's machine, faked for offline tests.

``PREPARERS`` maps a config file name pattern (fnmatch, relative to
``configs/``) to a function ``prepare(workdir: Path) -> list[str]`` that
creates what the config needs under ``workdir`` (dataset files, a weights
file in ``$TORCH_HOME``) and returns extra CLI arguments for its fast run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Preparer = Callable[[Path], list[str]]

PREPARERS: dict[str, Preparer] = {}


def preparer_for(config: str) -> Preparer | None:
    from fnmatch import fnmatch

    for pattern, prepare in PREPARERS.items():
        if fnmatch(config, pattern):
            return prepare
    return None
