"""Stratified, seeded splits: train/val/test (k-fold cross-validation: :mod:`project.data.folds`).

A split is a list with one entry per sample: "train", "val" or "test". The
same targets and seed always give the same split.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence

from project.exceptions import InputValueError, ProjectWarning

SPLITS = ("train", "val", "test")


def check_stratifiable(
    targets: Sequence[int], parts: int, what: str, class_names: Sequence[str] | None
) -> None:
    """Fails with a readable message where scikit-learn would fail with a cryptic one."""
    counts = Counter(targets)
    scarce = sorted(index for index, count in counts.items() if count < parts)
    if scarce:
        listed = ", ".join(
            f"{repr(class_names[i]) if class_names else i} ({counts[i]})" for i in scarce[:10]
        )
        raise InputValueError(
            f"cannot draw a stratified {what}: every class needs at least {parts} images, "
            f"but these have fewer: {listed}. Add images, leave those classes out "
            f"(data.classes), or provide the split yourself (train/val/test folders or a "
            f"split column)"
        )


def stratified_split(
    targets: Sequence[int],
    fractions: dict[str, float],
    seed: int,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Assigns each sample to "train" or to one of ``fractions``' splits.

    Each held-out split gets its fraction of all samples, every class in the same
    proportion as overall.
    """
    from sklearn.model_selection import train_test_split

    split = ["train"] * len(targets)
    rest = list(range(len(targets)))
    remaining = 1.0
    for name, fraction in fractions.items():
        if fraction == 0:
            continue
        share = fraction / remaining
        held_out = math.ceil(share * len(rest))  # scikit-learn rounds up too
        classes = len(set(targets[i] for i in rest))
        if held_out < classes:
            raise InputValueError(
                f"a {name} split of {fraction:.0%} is {held_out} images, fewer than the "
                f"{classes} classes it must each contain: raise the {name} fraction "
                f"(data.{name}_fraction) or add images"
            )
        if len(rest) - held_out < classes:
            given = ", ".join(f"data.{n}_fraction={f}" for n, f in fractions.items())
            raise InputValueError(
                f"the held-out splits leave {len(rest) - held_out} of {len(targets)} images "
                f"for training, fewer than the {classes} classes ({given}): lower the "
                "fractions or add images"
            )
        check_stratifiable([targets[i] for i in rest], 2, f"{name} split", class_names)
        stratify = [targets[i] for i in rest]
        rest, chosen = train_test_split(rest, test_size=share, stratify=stratify, random_state=seed)
        for i in chosen:
            split[i] = name
        remaining -= fraction
    warn_of_absent_classes(split, targets, [n for n, f in fractions.items() if f > 0], class_names)
    return split


def warn_of_absent_classes(
    split: Sequence[str],
    targets: Sequence[int],
    held_out: Sequence[str],
    class_names: Sequence[str] | None,
) -> None:
    """Warns of classes too small to reach every held-out split (stratifying rounds them out)."""
    absent: dict[str, list[str]] = {}
    present = set(zip(targets, split, strict=True))
    for index in sorted(set(targets)):
        for name in held_out:
            if (index, name) not in present:
                absent.setdefault(name, []).append(
                    repr(class_names[index]) if class_names else str(index)
                )
    for name, missing in absent.items():
        warnings.warn(
            f"the {name} split has no images of {len(missing)} classes, too small for its "
            f"fraction: {', '.join(missing[:10])}; their {name} figures are not measured. "
            f"Add images or raise data.{name}_fraction",
            ProjectWarning,
            stacklevel=2,
        )


def complete_split(
    split: Sequence[str],
    targets: Sequence[int],
    fractions: dict[str, float],
    seed: int,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Draws the held-out splits that ``split`` lacks from its training samples.

    ``fractions`` gives, per split that may be drawn ("val", "test"), its share
    of the training samples; a split ``split`` already has is left as it is.
    """
    missing = {name: f for name, f in fractions.items() if name not in split and f > 0}
    if not missing:
        return list(split)
    train = [i for i, name in enumerate(split) if name == "train"]
    drawn = stratified_split([targets[i] for i in train], missing, seed, class_names)
    completed = list(split)
    for i, name in zip(train, drawn, strict=True):
        completed[i] = name
    return completed


class TrainSubset:
    """Chooses which training images a run keeps; validation and test keep all theirs.

    Subclasses (``project.data.subsets.FewLabels``, ``LongTail``) are chosen in
    YAML as ``data.init_args.train_subset``.
    """

    def __call__(
        self, indices: list[int], targets: Sequence[int], num_classes: int, seed: int
    ) -> list[int]:
        """The kept part of ``indices`` (positions into ``targets``); the same for the same seed."""
        raise NotImplementedError
