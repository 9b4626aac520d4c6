"""rundir.py: the run folder's one writer, and one process per run folder (its lock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from snugtune.config import build_config, config_to_dict
from snugtune.errors import CheckpointError
from snugtune.recipe import resume
from snugtune.rundir import RunDir, atomic_write, to_jsonable, write_json, write_text


def run_lock(path: Path):  # type: ignore[no-untyped-def]
    return RunDir(path).lock()


def test_second_holder_is_refused_with_the_pid_then_the_lock_frees(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run"):
        assert RunDir(tmp_path / "run").lock_file.read_text().strip() == str(os.getpid())
        refused = pytest.raises(CheckpointError, match=rf"in use by another snugtune process \(pid {os.getpid()}\)")
        with refused, run_lock(tmp_path / "run"):
            pass
    with run_lock(tmp_path / "run"):  # released on exit
        pass


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    code = ("import sys, time; from snugtune.rundir import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)\n")
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


def test_atomic_write_replaces_and_keeps_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.txt"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_json(target, {"ok": 1})

    def fail(f: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_to_jsonable() -> None:
    data = {1: (np.float32(0.5), Path("x")), "s": {3, 1}, "n": float("inf"), "a": np.arange(2)}
    assert to_jsonable(data) == {"1": [0.5, "x"], "s": [1, 3], "n": None, "a": [0, 1]}
