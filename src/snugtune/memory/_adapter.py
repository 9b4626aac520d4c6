"""One interface over snugtune ``Classifier``s and plain modules: freeze groups, trainable set,
activation checkpointing, all undone after a simulation.

A ``Classifier`` (``snugtune.models``) already knows its blocks and how to freeze and
checkpoint them; a plain module (a timm or torchvision network given directly) is cut the
same way ``snugtune.models.groups`` cuts backbones, with its classifier layer as the head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["block_count", "configured", "parse_trainable"]


def parse_trainable(trainable: str) -> int | None:
    """``"all"`` -> None, ``"head"`` -> 0, ``"top:N"`` -> N (as ``PhaseConfig.top_blocks``)."""
    if trainable == "all":
        return None
    if trainable == "head":
        return 0
    if trainable.startswith("top:") and trainable[4:].isdigit():
        return int(trainable[4:])
    raise ValueError(f"trainable {trainable!r} must be all, head or top:N")


def _is_classifier(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("blocks", "set_trainable", "set_checkpointing"))


def _plain_head(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)  # timm models name their head
    if callable(get):
        head = get()
        if isinstance(head, nn.Module):
            return head
    children = [c for c in model.children() if any(True for _ in c.parameters())]
    return children[-1] if children else None


def _plain_blocks(model: nn.Module) -> list[nn.Module]:
    from snugtune.models.groups import backbone_blocks

    source = "timm" if hasattr(model, "group_matcher") else "torchvision"
    head = _plain_head(model)
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    blocks: list[nn.Module] = []
    for block in backbone_blocks(model, source):
        kept = [m for m in block if not any(id(p) in head_params for p in m.parameters())]
        if kept:
            blocks.append(nn.ModuleList(kept))
    return blocks


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The freeze groups of ``model``, bottom (stem) first."""
    if _is_classifier(model):
        return list(model.blocks)  # type: ignore[arg-type]
    return _plain_blocks(model)


def block_count(model: nn.Module) -> int:
    """How many freeze groups ``model`` has."""
    return len(blocks_of(model))


@contextmanager
def configured(model: nn.Module, trainable: str, checkpointing: Sequence[int]) -> Iterator[None]:
    """Set the trainable parameters and checkpointed blocks; restore modes and wrappers after.

    ``requires_grad`` is set on whatever tensors are installed (the fakes during a
    simulation), so a real model keeps its own flags once fakes are swapped out.
    """
    top = parse_trainable(trainable)
    was_training = model.training
    if _is_classifier(model):
        restore = _configure_classifier(model, top, checkpointing)
    else:
        restore = _configure_plain(model, top, checkpointing)
    try:
        yield
    finally:
        restore()
        model.train(was_training)


def _configure_classifier(model: Any, top: int | None, ckpt: Sequence[int]) -> Callable[[], None]:
    prev_ckpt = tuple(model.checkpointed_blocks()) if hasattr(model, "checkpointed_blocks") else ()
    prev_bn = getattr(model, "train_bn", False)
    model.train()
    model.set_trainable(top)
    model.set_checkpointing(list(ckpt))

    def restore() -> None:
        model.set_checkpointing(list(prev_ckpt))
        model.train_bn = prev_bn

    return restore


def _configure_plain(model: nn.Module, top: int | None, ckpt: Sequence[int]) -> Callable[[], None]:
    model.train()
    blocks = _plain_blocks(model) if (top is not None or ckpt) else []
    model.requires_grad_(top is None)
    if top is not None:
        head = _plain_head(model)
        if head is not None:
            head.requires_grad_(True)
        for block in blocks[len(blocks) - top :] if top else []:
            block.requires_grad_(True)
    wrapped: list[nn.Module] = []
    wanted = {i % len(blocks) for i in ckpt} if blocks else set()
    for i in sorted(wanted):
        for module in blocks[i].children():
            module.forward = _checkpointed(module.forward)  # type: ignore[method-assign]
            wrapped.append(module)

    def restore() -> None:
        for module in wrapped:
            del module.forward  # drop the instance attribute: the class method is back

    return restore


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run
