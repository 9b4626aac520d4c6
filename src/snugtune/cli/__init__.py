"""The ``snugtune`` command: parse, call the library, render; errors become one line.

Each sub-command lives in its own module with ``register(subparsers)`` which adds a parser
whose ``func`` default takes the parsed ``argparse.Namespace`` and returns an exit code.
Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from snugtune.errors import SnugtuneError

__all__ = ["main"]

COMMANDS = ("train", "plan", "memory", "evaluate", "predict", "export", "demo")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command that is installed."""
    parser = argparse.ArgumentParser(
        prog="snugtune",
        description="Fine-tune pretrained image classifiers within the memory you have.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"snugtune.cli.{name}_cmd")
        except ModuleNotFoundError as e:  # a command not built yet must not break the others
            if e.name != f"snugtune.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by ``python -m snugtune``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except SnugtuneError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
