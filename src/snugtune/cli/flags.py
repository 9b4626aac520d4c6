"""Command-line flags generated from dataclass fields: a field is a flag, its docstring the help.

``add_fields(parser, TrainConfig, ["batch_size", "resolution"])`` adds ``--batch-size`` and
``--resolution`` (and ``--res``, an alias a field declares in its metadata) with the type, the
choices and the help of the field, and the field's default in the help. Every flag defaults to
``None`` ("not given"), so a value from a YAML file or a run's saved settings is overridden only
by flags the user typed; :func:`given` collects those. Field docstrings are read with
``docstring_parser`` (attribute docstrings, as in litgpt's and jsonargparse's dataclass CLIs).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import docstring_parser

__all__ = ["add_fields", "field_help", "flag", "given", "options"]

T = typing.TypeVar("T")


def flag(name: str, prefix: str = "") -> str:
    """``batch_size`` -> ``--batch-size``; with ``prefix="head"``: ``--head-batch-size``."""
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The docstring under each field of the dataclass ``cls``, on one line."""
    doc = docstring_parser.parse_from_object(cls)
    return {p.arg_name: " ".join((p.description or "").split()) for p in doc.params}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base(tp: Any) -> tuple[Any, bool]:
    """``int | None`` -> (int, True); ``bool`` -> (bool, False)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else tp), True
    return tp, False


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        return ""
    else:
        return " (required)"
    if value is None:
        return ""
    if isinstance(value, bool):
        return f" (default: {'on' if value else 'off'})"
    return f" (default: {value})"


def _kwargs(cls: type, f: dataclasses.Field[Any]) -> dict[str, Any]:
    """argparse keywords for field ``f`` of ``cls``."""
    tp, _ = _base(_hints(cls)[f.name])
    kw: dict[str, Any] = {"default": None, "dest": f.name,
                          "help": field_help(cls).get(f.name, "") + _default_text(f)}
    meta: Mapping[str, Any] = f.metadata
    if tp is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) is tuple:
        kw.update(nargs=len(typing.get_args(tp)), type=typing.get_args(tp)[0], metavar="X")
    else:
        kw["type"] = meta.get("type", tp if tp in (int, float) else str)
        kw["metavar"] = {int: "N", float: "X"}.get(kw["type"], f.name.upper())
    if "choices" in meta:
        kw["choices"] = meta["choices"]
    if "metavar" in meta:
        kw["metavar"] = meta["metavar"]
    return kw


def add_fields(parser: Any, cls: type, names: Iterable[str], *, prefix: str = "",
               show_help: bool = True) -> None:
    """Add a flag for each named field of the dataclass ``cls`` to ``parser`` (or a group).

    Args:
        prefix: flags become ``--PREFIX-NAME`` and land in ``args.PREFIX__NAME``.
        show_help: False lists the flags in usage errors but not in ``--help``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        f = fields[name]
        kw = _kwargs(cls, f)
        if prefix:
            kw["dest"] = f"{prefix}__{name}"
        if not show_help:
            kw["help"] = argparse.SUPPRESS
        aliases = () if prefix else tuple(f.metadata.get("aliases", ()))
        parser.add_argument(flag(name, prefix), *aliases, **kw)


def given(args: argparse.Namespace, names: Iterable[str], *, prefix: str = "") -> dict[str, Any]:
    """The values of the flags the user gave, by field name (tuples as given)."""
    out = {}
    for name in names:
        value = getattr(args, f"{prefix}__{name}" if prefix else name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def options(args: argparse.Namespace, cls: type[T]) -> T:
    """The dataclass ``cls`` with the flags the user gave over its defaults."""
    return cls(**given(args, [f.name for f in dataclasses.fields(cls)]))  # type: ignore[arg-type]
