"""Few labels and long tails (a leaf): which training images a run keeps."""

from __future__ import annotations

from collections import Counter

import pytest

from project.data.subsets import FewLabels, LongTail

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
