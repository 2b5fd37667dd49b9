"""Stratified k-fold cross-validation splits (``data.num_folds``, ``data.fold``).

Imported only by runs that set ``data.num_folds``; the train/val/test split of
every other run is :func:`project.data.splits.complete_split`.
"""

from __future__ import annotations

from collections.abc import Sequence

from project.data.splits import check_stratifiable


def kfold_split(
    split: Sequence[str],
    targets: Sequence[int],
    num_folds: int,
    fold: int,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Fold ``fold`` of a stratified ``num_folds``-fold split of the train and val samples.

    The samples of that fold become "val", the others "train"; "test" samples
    stay out of the folds, so every fold is scored on the same test split.
    """
    from sklearn.model_selection import StratifiedKFold

    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in 0..{num_folds - 1} (num_folds={num_folds}), got {fold}")
    pool = [i for i, name in enumerate(split) if name != "test"]
    pool_targets = [targets[i] for i in pool]
    check_stratifiable(pool_targets, num_folds, f"{num_folds}-fold split", class_names)
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    _, held_out = list(folds.split(pool, pool_targets))[fold]
    result = list(split)
    for i in pool:
        result[i] = "train"
    for position in held_out:
        result[pool[position]] = "val"
    return result
