"""Freeze groups: a backbone cut into ordered blocks, bottom (stem) to top.

timm models declare their groups as regex data (``group_matcher(coarse=True)``: stem, then one
group per stage); torchvision models are cut by their top-level children, expanding the single
``features`` sequential when there is one (vgg, mobilenet, efficientnet). Each block is an
(unregistered) ``nn.ModuleList`` of the largest sub-modules wholly inside the group, so it can
be frozen, unfrozen or activation-checkpointed as a unit.
"""

from __future__ import annotations

from timm.models import group_modules
from torch import nn

__all__ = ["backbone_blocks"]


def backbone_blocks(backbone: nn.Module, source: str) -> list[nn.ModuleList]:
    """Ordered freeze groups of a headless backbone (bottom first)."""
    matcher = getattr(backbone, "group_matcher", None)
    if source == "timm" and callable(matcher):
        groups = group_modules(backbone, matcher(coarse=True))
        names = [list(v) for _, v in sorted(groups.items())]
        return _cover(backbone, names)
    return _children_blocks(backbone)


def _cover(root: nn.Module, groups: list[list[str]]) -> list[nn.ModuleList]:
    """For each group of leaf-module names, the maximal sub-modules made only of that group."""
    leaf_group = {name: gi for gi, names in enumerate(groups) for name in names}
    modules = dict(root.named_modules())

    def pure(prefix: str) -> int | None:
        gids = {g for leaf, g in leaf_group.items() if leaf == prefix or leaf.startswith(prefix + ".")}
        return gids.pop() if len(gids) == 1 else None

    purity = {name: pure(name) for name in modules if name}
    blocks: list[list[nn.Module]] = [[] for _ in groups]
    for name, gid in purity.items():
        if gid is None:
            continue
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if parent and purity.get(parent) == gid:
            continue  # covered by its parent
        blocks[gid].append(modules[name])
    return [nn.ModuleList(b) for b in blocks if b]


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _children_blocks(backbone: nn.Module) -> list[nn.ModuleList]:
    children = [c for c in backbone.children() if _has_params(c)]
    seqs = [c for c in children if isinstance(c, nn.Sequential)]
    blocks: list[nn.ModuleList] = []
    for child in children:
        if len(seqs) == 1 and child is seqs[0]:
            blocks.extend(nn.ModuleList([m]) for m in child if _has_params(m))
        else:
            blocks.append(nn.ModuleList([child]))
    return blocks
