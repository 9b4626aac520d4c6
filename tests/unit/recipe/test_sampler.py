"""Epoch order is a pure function of the seed."""

from snugtune.recipe.sampler import EpochSampler, epoch_seed


def test_same_seed_same_order_other_seed_other_order() -> None:
    a = list(EpochSampler(20, seed=epoch_seed(0, 0, 1)))
    assert a == list(EpochSampler(20, seed=epoch_seed(0, 0, 1)))
    assert a != list(EpochSampler(20, seed=epoch_seed(0, 0, 2)))
    assert sorted(i for i, _ in a) == list(range(20))
