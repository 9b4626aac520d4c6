"""Shared test setup: offline, deterministic, quiet."""

import os

# No hub is reachable from CI: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
