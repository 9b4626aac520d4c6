"""snugtune: fine-tune pretrained image classifiers within the memory you have."""

from __future__ import annotations

__version__ = "0.1.0"
