"""split_samples: stratified, seeded, disjoint, complete, stable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from snugtune.data import Sample, make_image_folder, scan_folder, split_folder, split_samples
from snugtune.data.doctor import diagnose
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


def _groups(n: int, members: list[list[int]]) -> np.ndarray:
    g = np.full(n, -1, dtype=np.int64)
    for k, idx in enumerate(members):
        g[idx] = k
    return g


def test_groups_land_on_one_side_and_stay_stratified() -> None:
    pool = _pool({0: 50, 1: 50})
    rng = np.random.default_rng(0)
    members = [sorted(rng.choice(100, 3, replace=False).tolist()) for _ in range(12)]
    members = [m for k, m in enumerate(members) if not set(m) & {i for n in members[:k] for i in n}]
    train, val = split_samples(pool, 0.2, seed=0, groups=_groups(len(pool), members))
    val_set = set(val)
    for idx in members:
        sides = {pool[i] in val_set for i in idx}
        assert len(sides) == 1, idx  # never on both sides
    v = Counter(s.label for s in val)
    assert v[0] <= 10 and v[1] <= 10 and v[0] + v[1] >= 18  # stratified, close to the plain share
    assert set(train) | val_set == set(pool) and not set(train) & val_set


def test_without_groups_it_is_the_plain_split() -> None:
    pool = _pool({0: 30, 1: 7, 2: 2})
    plain = split_samples(pool, 0.25, seed=5)
    assert split_samples(pool, 0.25, seed=5, groups=np.full(len(pool), -1)) == plain
    assert split_samples(pool, 0.25, seed=5, groups=_groups(len(pool), [[0]])) == plain


def test_a_class_that_is_one_group_stays_in_training() -> None:
    pool = _pool({0: 10, 1: 2})
    train, val = split_samples(pool, 0.5, seed=0, groups=_groups(len(pool), [[10, 11]]))
    assert Counter(s.label for s in val) == {0: 5}
    assert Counter(s.label for s in train) == {0: 5, 1: 2}


def test_group_across_classes_counts_against_each() -> None:
    pool = _pool({0: 4, 1: 4})
    # one picture in both classes (conflicting labels), ranked first or not: one side only
    for seed in range(8):
        train, val = split_samples(pool, 0.25, seed=seed, groups=_groups(len(pool), [[0, 4]]))
        assert (pool[0] in val) == (pool[4] in val)
        v = Counter(s.label for s in val)
        assert v[0] == 1 and v[1] == 1


def test_split_folder_keeps_copies_together_and_can_be_turned_off(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", classes=2, per_class=20, size=16, seed=3)
    for i in range(10):  # every image of class_0 copied once
        (root / "class_0" / f"copy_{i}.png").write_bytes((root / "class_0" / f"img_{i}.png").read_bytes())
    scan = scan_folder(root, workers=1)
    together = split_folder(scan, 0.3, seed=1)
    found = diagnose(together)
    assert together.kept_together == 10 and found.counts()["leakage"]["groups"] == 0
    assert found.kept_together == 10 and found.counts()["duplicates"]["groups"] == 10
    leaking = [diagnose(split_folder(scan, 0.3, seed=s, group_copies=False)) for s in range(5)]
    assert any(d.counts()["leakage"]["groups"] for d in leaking)
    assert all(d.kept_together == 0 for d in leaking)
