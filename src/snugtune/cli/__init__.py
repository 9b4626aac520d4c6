"""The ``snugtune`` command: parse (:mod:`.parser`), call the library (:mod:`.commands`), render
(:mod:`.render`); every error becomes one line.

Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage, 130 interrupted. The commands
module, which imports torch, is imported once a command runs (not for ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from snugtune.cli.parser import build_parser
from snugtune.config import DEFAULT_OUT
from snugtune.errors import SnugtuneError
from snugtune.rundir import RunDir

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used by ``python -m snugtune``).

    Every failure becomes one line on stderr (``--debug`` re-raises it for the traceback):
    a ``SnugtuneError`` exits with its code (2 for config errors, else 1), any other exception
    with 1. Ctrl-C and SIGTERM exit 130; a training run has checkpointed every completed epoch
    (and finishes a checkpoint being written), so ``train --resume`` loses at most the epoch
    in progress.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    try:
        with _sigterm_as_interrupt():
            commands = importlib.import_module("snugtune.cli.commands")  # torch: only now
            return int(getattr(commands, args.command.replace("-", "_"))(args) or 0)
    except SnugtuneError as e:
        if args.debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - an unexpected failure is still one line
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (multi-line messages joined with "; ")."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return "; ".join(lines) or type(e).__name__


def _resume_hint(args: argparse.Namespace) -> str:
    """How to continue an interrupted ``train`` run, if it got far enough to have a folder."""
    if args.command != "train":
        return ""
    run = RunDir(args.resume or args.out or DEFAULT_OUT)
    if not run.config.exists():
        return ""
    return f"; completed epochs are checkpointed, continue with: snugtune train --resume {run.path}"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, a scheduler's stop, a container shutdown) like Ctrl-C while
    the command runs; the previous handler comes back afterwards. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
