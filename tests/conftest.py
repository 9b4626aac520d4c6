"""Fixtures for every test: each test has a cache folder of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from snugtune.store import CACHE_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache folder of module- and session-scoped fixtures (a test gets its own)."""
    folder = tmp_path_factory.mktemp("snugtune-cache")
    before = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = before


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$SNUGTUNE_CACHE_DIR`` for this test (and the processes it starts): its data index and
    caches start empty, and none are written to the user's ~/.cache."""
    folder = tmp_path / "snugtune-cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder
