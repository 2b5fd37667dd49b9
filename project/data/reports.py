"""What setup tells the user: the images per class and split, and what it could not use."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from project.data.splits import SPLITS
from project.exceptions import InputValueError, ProjectWarning

# How many unusable files a warning lists; strict mode lists them all.
LISTED = 5


def report_skipped(
    skipped: list[tuple[str, str]], what: str, strict: bool
) -> list[tuple[str, str]]:
    """One warning for everything unusable, or (``strict``) an error listing all of it.

    Returns ``skipped``, for the datamodule to keep.
    """
    if not skipped:
        return skipped
    if strict:
        listing = "\n".join(f"  {item}: {reason}" for item, reason in skipped)
        raise InputValueError(
            f"{len(skipped)} {what} cannot be used (data.strict is true):\n{listing}\n"
            "Fix or remove them, or set data.strict: false to skip them with a warning."
        )
    listing = "\n".join(f"  {item}: {reason}" for item, reason in skipped[:LISTED])
    more = f"\n  ... and {len(skipped) - LISTED} more" if len(skipped) > LISTED else ""
    rank_zero_warn(
        f"Skipped {len(skipped)} {what} that cannot be used:\n{listing}{more}\n"
        "Set data.strict: true to stop instead, with the full list.",
        category=ProjectWarning,
    )
    return skipped


def split_table(
    datasets: dict[str, Any], class_names: list[str], seed: int, fold: int, folds: int | None
) -> str:
    """The images of each class in each split, as a table with a title line."""
    lines = [f"{'class':<16}" + "".join(f"{name:>8}" for name in SPLITS)]
    counts = {name: Counter(datasets[name].targets) for name in SPLITS}
    for index, class_name in enumerate(class_names):
        lines.append(f"{class_name:<16}" + "".join(f"{counts[n][index]:>8}" for n in SPLITS))
    lines.append(f"{'total':<16}" + "".join(f"{len(datasets[n]):>8}" for n in SPLITS))
    folded = f", fold {fold} of {folds}" if folds else ""
    return f"Images per class and split (seed {seed}{folded}):\n" + "\n".join(lines)
