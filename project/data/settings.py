"""The DataModule's settings checked when it is built, before any file is read.

Each mistake raises :class:`~project.exceptions.InputValueError` with one line that
names the key (``data.batch_size``) and the value given.
"""

from __future__ import annotations

from typing import Any

from project.exceptions import InputValueError


def check_settings(
    *,
    batch_size: int,
    num_workers: int | None,
    prefetch_factor: int | None,
    image_size: Any,
    resize_size: int | None,
    val_fraction: float,
    test_fraction: float,
    num_folds: int | None,
    fold: int,
    custom_transforms: bool,
    augment: str,
) -> None:
    """Raises on the first setting that cannot work; returns quietly otherwise."""
    positive = {
        "batch_size": batch_size,
        "prefetch_factor": prefetch_factor,
        "image_size": image_size,
        "resize_size": resize_size,
    }
    for key, value in positive.items():
        sides = value if isinstance(value, (list, tuple)) else [value]
        if value is not None and not all(isinstance(s, int) and s >= 1 for s in sides):
            raise InputValueError(f"data.{key} must be a positive integer, got {value!r}")
    if num_workers is not None and num_workers < 0:
        raise InputValueError(
            f"data.num_workers must be 0 (load in the training process) or more, got {num_workers}"
        )
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1:
        raise InputValueError(
            f"data.val_fraction ({val_fraction}) and data.test_fraction ({test_fraction}) "
            "must each be in [0, 1)"
        )
    if val_fraction + test_fraction >= 1:
        raise InputValueError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} leaves "
            "no training data; their sum must be below 1"
        )
    if custom_transforms and augment != "none":
        raise InputValueError(
            f"data.train_transforms and data.augment ({augment!r}) both set: use one "
            "(a preset, or your own list)"
        )
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise InputValueError(
            f"data.num_folds must be at least 2 and data.fold in 0..num_folds-1; got "
            f"num_folds={num_folds}, fold={fold}"
        )
