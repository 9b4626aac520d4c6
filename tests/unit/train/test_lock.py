"""train/lock.py: one process per run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from snugtune.config import build_config, config_to_dict
from snugtune.errors import CheckpointError
from snugtune.train import resume
from snugtune.train.lock import LOCK_NAME, run_lock


def test_second_holder_is_refused_with_the_pid_then_the_lock_frees(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).read_text().strip() == str(os.getpid())
        refused = pytest.raises(CheckpointError, match=rf"in use by another snugtune process \(pid {os.getpid()}\)")
        with refused, run_lock(tmp_path / "run"):
            pass
    with run_lock(tmp_path / "run"):  # released on exit
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from snugtune.train.lock import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointError, match=f"pid {proc.pid}"), run_lock(tmp_path):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops a dead process's flock
        try:
            with run_lock(tmp_path):
                break
        except CheckpointError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_resume_refuses_a_run_in_use(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = build_config(None, {"data": str(tmp_path), "out": str(run)})
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    with run_lock(run), pytest.raises(CheckpointError, match="in use by another snugtune process"):
        resume(run)
