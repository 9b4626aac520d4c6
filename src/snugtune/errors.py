"""The one exception tree of snugtune.

::

    SnugtuneError
     +-- ConfigError       a setting is invalid (all problems listed at once)
     +-- DataError         the image folder cannot be used (no classes, an empty class)
     +-- WeightsError      pretrained weights cannot be found or loaded
     +-- BudgetError       nothing fits the memory budget (says what would)
     +-- CheckpointError   a checkpoint is missing, corrupt or unsafe

Every message says what failed, the values involved, and how to fix it. The CLI prints
``str(error)`` as one line and exits 2 for ``ConfigError``, 1 for the others.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "SnugtuneError",
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


class WeightsError(SnugtuneError):
    """Pretrained weights are unavailable or do not match the model."""


class BudgetError(SnugtuneError):
    """No configuration fits the memory budget."""


class CheckpointError(SnugtuneError):
    """A checkpoint is missing, corrupt, or refused as unsafe."""
