"""The one seeding scheme: every random stream of a run is a pure function of named parts.

``derive_seed(run_seed, "epoch", phase, epoch)`` seeds an epoch's shuffle and dropout,
``derive_seed(epoch_seed, index)`` one training image's augmentation, ``derive_seed(run_seed,
path)`` ranks an image for the train/validation split. The parts are hashed with BLAKE2b
(``hashlib``), so a seed does not depend on the Python version, the machine, the worker that
loads an item, or whether the run was resumed; nearby inputs give unrelated seeds.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from ``parts`` (ints and strings; order matters), for ``torch.manual_seed``."""
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
