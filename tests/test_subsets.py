"""Few labels and long tails (a leaf): which training images a run keeps, and how they are drawn."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fakes import write_image_folder

from project.data import ImageFolderDataModule
from project.data.subsets import Balanced, FewLabels, LongTail

# 10 classes of 100 training images each, in shuffled positions.
TARGETS = [(7 * i) % 10 for i in range(1000)]
INDICES = list(range(0, 1000))


def counts(kept: list[int]) -> list[int]:
    per_class = Counter(TARGETS[i] for i in kept)
    return [per_class[c] for c in range(10)]


def test_few_labels_keeps_that_many_of_each_class_the_same_for_the_same_seed():
    kept = FewLabels(per_class=7)(INDICES, TARGETS, 10, seed=0)
    assert counts(kept) == [7] * 10
    assert kept == FewLabels(per_class=7)(INDICES, TARGETS, 10, seed=0)
    assert kept != FewLabels(per_class=7)(INDICES, TARGETS, 10, seed=1)
    assert kept == sorted(kept) and set(kept) <= set(INDICES)
    # A class smaller than per_class keeps all it has.
    assert counts(FewLabels(per_class=500)(INDICES, TARGETS, 10, seed=0)) == [100] * 10


def test_long_tail_falls_geometrically_from_the_first_class_to_one_over_the_ratio():
    kept = LongTail(ratio=10)(INDICES, TARGETS, 10, seed=0)
    expected = [round(100 * 10 ** (-c / 9)) for c in range(10)]
    assert counts(kept) == expected
    assert expected[0] == 100 and expected[-1] == 10


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(ValueError, match="per_class must be at least 1, got 0"):
        FewLabels(per_class=0)
    with pytest.raises(ValueError, match=r"ratio must be at least 1, got 0\.5"):
        LongTail(ratio=0.5)


def test_balanced_sampler_draws_every_class_about_equally(tmp_path: Path):
    write_image_folder(tmp_path / "a", ("common",), per_class=40, sizes=((16, 16),))
    write_image_folder(tmp_path / "a", ("rare",), per_class=8, sizes=((16, 16),))
    root = tmp_path / "a"
    datamodule = ImageFolderDataModule(
        root=str(root), sampler=Balanced(), val_fraction=0.2, test_fraction=0.2, num_workers=0
    )
    datamodule.setup("fit")
    common, rare = datamodule.class_counts
    assert common >= 4 * rare > 0
    loader = datamodule.train_dataloader()
    drawn = Counter()
    for epoch in range(20):
        loader.sampler.set_epoch(epoch)  # as Lightning does before every epoch
        for _, targets in loader:
            drawn.update(targets.tolist())
    assert 0.4 < drawn[1] / sum(drawn.values()) < 0.6
