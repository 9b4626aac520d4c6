"""The one exception tree of snugtune.

::

    SnugtuneError
     +-- ConfigError              a setting is invalid (all problems listed at once)
     +-- DataError                the image folder cannot be used (no classes, an empty class)
     |    +-- ImageLoadError      one image file cannot be used (``path``, ``reason``)
     +-- WeightsError             pretrained weights cannot be found or loaded
     +-- BudgetError              nothing fits the memory budget (says what would)
     +-- CheckpointError          a run, checkpoint or model file is missing, corrupt or unsafe
     |    +-- DiskFullError       no space left for an atomic write (the old file is kept)
     |    +-- UnsafeCheckpointError  a checkpoint would run code when loaded (never loaded)
     +-- ExportError              an export could not be written or does not match PyTorch
     +-- DistributedError         a process of a data-parallel run failed or lost its peers

Every message says what failed, the values involved, and how to fix it. The CLI prints
``str(error)`` as one line and exits 2 for ``ConfigError``, 1 for the others.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DiskFullError",
    "DistributedError",
    "ExportError",
    "ImageLoadError",
    "SnugtuneError",
    "UnsafeCheckpointError",
    "WeightsError",
]


class SnugtuneError(Exception):
    """Base of every error snugtune raises on purpose."""

    exit_code: int = 1


class ConfigError(SnugtuneError, ValueError):
    """One or more settings are invalid; ``problems`` lists each one."""

    exit_code = 2

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} config errors: " + "; ".join(self.problems)
        super().__init__(msg)


class DataError(SnugtuneError):
    """The dataset cannot be used as given."""


class ImageLoadError(DataError):
    """An image file cannot be used; ``reason`` is the short text the scan report lists."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"Cannot use image {self.path!r}: {reason}. Remove or replace the file "
            "(snugtune train rescans the folder and skips it)."
        )


class WeightsError(SnugtuneError):
    """Pretrained weights are unavailable or do not match the model."""


class BudgetError(SnugtuneError):
    """No configuration fits the memory budget."""


class CheckpointError(SnugtuneError):
    """A checkpoint is missing, corrupt, or refused as unsafe."""


class DiskFullError(CheckpointError):
    """No space left for an atomic write; the file being replaced is unchanged."""

    def __init__(self, path: Path, free_bytes: int, free_text: str) -> None:
        self.path, self.free_bytes, self.free_text = path, free_bytes, free_text
        super().__init__(
            f"disk full while writing {path} ({free_text} free); {path.name} is unchanged. "
            "Free some space and try again"
        )


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that would run code: refused without falling back to an older one."""


class ExportError(SnugtuneError):
    """An export could not be written, or the written model does not match PyTorch's."""


class DistributedError(SnugtuneError):
    """A process of a data-parallel run failed or lost contact with the others."""
