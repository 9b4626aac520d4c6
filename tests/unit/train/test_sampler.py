"""Epoch order is a pure function of the seed; ranks partition it; start resumes mid-epoch."""

from snugtune.train.sampler import EpochSampler, epoch_seed


def test_same_seed_same_order_other_seed_other_order() -> None:
    a = list(EpochSampler(20, seed=epoch_seed(0, 0, 1)))
    assert a == list(EpochSampler(20, seed=epoch_seed(0, 0, 1)))
    assert a != list(EpochSampler(20, seed=epoch_seed(0, 0, 2)))
    assert sorted(i for i, _ in a) == list(range(20))


def test_ranks_partition_the_epoch() -> None:
    parts = [[i for i, _ in EpochSampler(10, seed=3, rank=r, world_size=2)] for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(10))


def test_start_skips_what_was_already_seen() -> None:
    full = list(EpochSampler(12, seed=5))
    assert list(EpochSampler(12, seed=5, start=4)) == full[4:]
    assert len(EpochSampler(12, seed=5, start=4)) == 8
