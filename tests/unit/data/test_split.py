"""split_samples: stratified, seeded, disjoint, complete, stable."""

from __future__ import annotations

from collections import Counter

import pytest

from snugtune.data import Sample, split_samples
from snugtune.errors import ConfigError


def _pool(counts: dict[int, int], root: str = "/data") -> list[Sample]:
    return [
        Sample(f"{root}/c{lbl}/img_{i}.png", lbl) for lbl, n in counts.items() for i in range(n)
    ]


def test_stratified_disjoint_complete_order_kept() -> None:
    pool = _pool({0: 50, 1: 10, 2: 3, 3: 2, 4: 1})
    train, val = split_samples(pool, 0.2, seed=0)
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(pool)
    assert len(train) + len(val) == len(pool)
    v = Counter(s.label for s in val)
    assert v == {0: 10, 1: 2, 2: 1, 3: 1}  # round(n * 0.2), at least 1 when n >= 2
    t = Counter(s.label for s in train)
    assert t[3] == 1 and t[4] == 1  # a 2-image class keeps one on each side; a 1-image class trains
    assert list(train) == [s for s in pool if s in set(train)]  # input order kept
    assert list(val) == [s for s in pool if s in set(val)]


def test_large_fraction_still_leaves_one_for_training() -> None:
    train, val = split_samples(_pool({0: 4, 1: 4}), 0.99, seed=0)
    assert Counter(s.label for s in train) == {0: 1, 1: 1}


def test_seeded_and_deterministic() -> None:
    pool = _pool({0: 30, 1: 30})
    assert split_samples(pool, 0.3, seed=1) == split_samples(list(pool), 0.3, seed=1)
    assert split_samples(pool, 0.3, seed=1)[1] != split_samples(pool, 0.3, seed=2)[1]


def test_zero_fraction_and_empty() -> None:
    pool = _pool({0: 3, 1: 3})
    assert split_samples(pool, 0.0, seed=0) == (tuple(pool), ())
    assert split_samples([], 0.2, seed=0) == ((), ())


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_fraction_is_a_config_error(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"--val-split"):
        split_samples(_pool({0: 3, 1: 3}), bad, seed=0)


def test_same_split_after_moving_the_dataset() -> None:
    a = split_samples(_pool({0: 40, 1: 40}, root="/home/me/data"), 0.25, seed=3)[1]
    b = split_samples(_pool({0: 40, 1: 40}, root="/mnt/other/place"), 0.25, seed=3)[1]
    assert [s.path.split("/")[-2:] for s in a] == [s.path.split("/")[-2:] for s in b]


def test_adding_an_image_moves_at_most_one_other() -> None:
    pool = _pool({0: 40, 1: 40})
    val_before = set(split_samples(pool, 0.2, seed=0)[1])
    grown = [*pool, Sample("/data/c0/new.png", 0)]
    val_after = set(split_samples(grown, 0.2, seed=0)[1])
    assert len(val_before - val_after) <= 1
