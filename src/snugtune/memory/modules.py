"""One interface over snugtune ``Classifier``s and plain modules: freeze groups, trainable set,
activation checkpointing, all undone after a simulation.

A ``Classifier`` (``snugtune.models``) already knows its blocks and how to freeze and
checkpoint them; a plain module (a timm or torchvision network given directly) is cut the
same way ``snugtune.models.groups`` cuts backbones, with its classifier layer as the head.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from snugtune.config import parse_trainable
from snugtune.models import Classifier
from snugtune.models.groups import backbone_blocks
from snugtune.step import set_checkpointing

__all__ = ["block_count", "blocks_of", "configured", "head_of"]


def _plain_head(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_classifier", None)  # timm models name their head
    if callable(get):
        head = get()
        if isinstance(head, nn.Module):
            return head
    children = [c for c in model.children() if any(True for _ in c.parameters())]
    return children[-1] if children else None


def _plain_blocks(model: nn.Module) -> list[nn.ModuleList]:
    source = "timm" if hasattr(model, "group_matcher") else "torchvision"
    head = _plain_head(model)
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    blocks: list[nn.ModuleList] = []
    for block in backbone_blocks(model, source):
        kept = [m for m in block if not any(id(p) in head_params for p in m.parameters())]
        if kept:
            blocks.append(nn.ModuleList(kept))
    return blocks


def blocks_of(model: nn.Module) -> list[nn.ModuleList]:
    """The freeze groups of ``model``, bottom (stem) first."""
    if isinstance(model, Classifier):
        return list(model.blocks)
    return _plain_blocks(model)


def head_of(model: nn.Module) -> nn.Module:
    """The part of ``model`` trained at the head's learning rate (its classifier layer)."""
    if isinstance(model, Classifier):
        return model.head
    return _plain_head(model) or nn.Identity()


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
    if isinstance(model, Classifier):
        restore = _configure_classifier(model, top, checkpointing)
    else:
        restore = _configure_plain(model, top, checkpointing)
    try:
        yield
    finally:
        restore()
        model.train(was_training)


def _configure_classifier(model: Classifier, top: int | None, ckpt: Sequence[int]) -> Callable[[], None]:
    prev_ckpt = model.checkpointed_blocks()
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
    set_checkpointing(blocks, ckpt)

    def restore() -> None:
        set_checkpointing(blocks, ())

    return restore
