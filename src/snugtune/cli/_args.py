"""Arguments shared by several sub-commands."""

from __future__ import annotations

import argparse

__all__ = ["add_inference_args", "budget_bytes"]


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--batch-size`` and ``--gpu-memory`` of ``evaluate`` and ``predict``."""
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--gpu-memory", metavar="SIZE",
                   help="memory budget, e.g. 2GiB (batches are halved to fit it)")


def budget_bytes(text: str | None) -> int | None:
    """``--gpu-memory`` in bytes (None: no budget).

    Raises:
        ConfigError: the text is not a size (one line, exit code 2).
    """
    from snugtune.errors import ConfigError
    from snugtune.units import parse_bytes

    try:
        return parse_bytes(text) if text else None
    except ValueError as e:
        raise ConfigError(f"--gpu-memory: {e}") from None
