"""Micro-batches: the local batch, and the one OOM recovery (halve and retry the same work)."""

from __future__ import annotations

import pytest
import torch

from snugtune.errors import BudgetError
from snugtune.step import MicroBatch, derive_seed, local_batch, retry_halving


def test_the_local_batch_is_one_device_share_of_what_a_step_draws() -> None:
    assert local_batch(32, 1000) == 32 and local_batch(32, 10) == 10
    assert local_batch(7, 100, world_size=2) == 4 and local_batch(32, 0) == 1


def test_retry_halving_reruns_the_same_work_smaller_and_records_it() -> None:
    sizes, rewound = [], []

    def work(mb: int) -> str:
        sizes.append(mb)
        if mb > 3:
            raise torch.OutOfMemoryError("test")
        return f"done at {mb}"

    out, micro = retry_halving(work, MicroBatch(16), where="t", step=5, epoch=2,
                               rewind=lambda: rewound.append(1))
    assert out == "done at 2" and sizes == [16, 8, 4, 2] and len(rewound) == 3
    assert micro.size == 2 and [r.to_dict() for r in micro.recoveries][0] == \
        {"epoch": 2, "step": 5, "from": 16, "to": 8}
    assert micro.accumulation(32) == 16
    with pytest.raises(BudgetError, match="micro-batch 1"):
        retry_halving(lambda mb: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), MicroBatch(1),
                      where="t")


def test_seeds_are_pure_functions_of_their_parts() -> None:
    assert derive_seed(0, "epoch", 1, 2) == derive_seed(0, "epoch", 1, 2)
    assert derive_seed(0, "epoch", 1, 2) != derive_seed(0, "epoch", 2, 1)
    assert derive_seed(1, 2) != derive_seed("1", 2)  # types are part of the key
    assert 0 <= derive_seed(5) < 2**63
