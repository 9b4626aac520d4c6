"""Activation checkpointing of chosen blocks: their activations are recomputed in backward.

One wrapper for the trainer's ``Classifier`` and the memory simulator's plain modules. A block
is a list of modules; checkpointing it wraps each module's ``forward`` (an instance attribute
over the class's method) with ``torch.utils.checkpoint`` (non-reentrant, as PyTorch
recommends); un-checkpointing removes the wrapper. Without grad (evaluation) the wrapper
calls the plain forward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpointed_blocks", "set_checkpointing"]

_MARK = "_snugtune_checkpointed"


def _wrap(module: nn.Module) -> Callable[..., Any]:
    forward = module.forward
    own = "forward" in module.__dict__  # an instance attribute already (rare): put it back

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    setattr(run, _MARK, forward if own else None)
    return run


def _wrapped(module: nn.Module) -> bool:
    return hasattr(module.__dict__.get("forward"), _MARK)


def set_checkpointing(blocks: Sequence[Iterable[nn.Module]], indices: Iterable[int]) -> None:
    """Checkpoint exactly the blocks at ``indices`` (negative counts from the top)."""
    wanted = {i % len(blocks) for i in indices} if blocks else set()
    for i, block in enumerate(blocks):
        for module in block:
            if i in wanted and not _wrapped(module):
                module.forward = _wrap(module)  # type: ignore[method-assign]
            elif i not in wanted and _wrapped(module):
                own = getattr(module.__dict__["forward"], _MARK)
                del module.forward  # the class's method is back
                if own is not None:
                    module.forward = own  # type: ignore[method-assign]


def checkpointed_blocks(blocks: Sequence[Iterable[nn.Module]]) -> tuple[int, ...]:
    """Indices of the blocks whose modules are checkpointed."""
    return tuple(i for i, block in enumerate(blocks) if any(_wrapped(m) for m in block))
