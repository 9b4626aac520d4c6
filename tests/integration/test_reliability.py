"""Interrupted runs lose nothing: real ``kill -9``, Ctrl-C and SIGTERM, then ``--resume``.

Every run here is a real ``python -m snugtune`` subprocess on CPU with ``--deterministic``; the
final ``model.safetensors`` of an interrupted-and-resumed run must be byte-identical to an
uninterrupted one. Every stop lands at an exact point, never timed by sleeping or by watching
the run folder: ``_interruptible.py`` freezes the process there (``kill -9``) or pauses it
there while a test's signal arrives (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from snugtune.cli import main
from snugtune.config import build_config, config_to_dict
from snugtune.data import make_image_folder
from snugtune.errors import CheckpointError
from snugtune.rundir import RunDir
from snugtune.store import CacheHome, DataIndex

from .conftest import FAST

pytestmark = pytest.mark.slow

HELPER = Path(__file__).with_name("_interruptible.py")
# 3 epochs (head 2, finetune 1) of 2 steps each; 5 checkpoints: head 1, head 2, phase
# boundary, finetune 1, phase boundary.
ARGS = [*FAST, "--head-epochs", "2", "--finetune-epochs", "1", "--deterministic"]
EPOCHS = 3
TIMEOUT_S = 900  # generous: the machine is shared


class Proc:
    """A snugtune subprocess whose output goes to files (a frozen process never blocks)."""

    def __init__(self, argv: list[str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        n = len(list(logs.glob("*.err")))
        self.out, self.err = logs / f"{n}.out", logs / f"{n}.err"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err, env=env)

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` until true; fail if the process ends first or it takes too long."""
        deadline = time.monotonic() + TIMEOUT_S
        while not ready():
            if self.popen.poll() is not None:
                pytest.fail(f"exited {self.popen.returncode} before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.popen.kill()
                pytest.fail(f"timed out waiting for {what}:\n{self.stderr}")
            time.sleep(0.02)

    def signal(self, sig: int) -> int:
        os.kill(self.popen.pid, sig)
        return self.popen.wait(timeout=TIMEOUT_S)

    def finish(self) -> int:
        return self.popen.wait(timeout=TIMEOUT_S)


# Ctrl-C reaches the run as it would from a terminal: a test session started in the background
# (``make test &``, nohup) hands its children SIGINT ignored, which exec keeps.
_SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def snugtune(*args: str) -> list[str]:
    return [sys.executable, "-c", _SIGINT_DEFAULT, "-m", "snugtune", *args]


def frozen_at(point: str, marker: Path, *args: str) -> list[str]:
    return [sys.executable, str(HELPER), point, str(marker), "--", *args]


def kill_at(point: str, logs: Path, *args: str) -> str:
    """Start snugtune frozen at ``point``, wait until it is there, SIGKILL it."""
    marker = logs / f"marker-{point.replace(':', '-')}"
    marker.unlink(missing_ok=True)
    p = Proc(frozen_at(point, marker, *args), logs)
    p.wait_for(marker.exists, f"freeze point {point}")
    assert p.signal(signal.SIGKILL) == -signal.SIGKILL
    return marker.read_text()


def rows(run: Path) -> int:
    """Epoch rows in metrics.csv (0 before the first epoch ends)."""
    path = RunDir(run).metrics_csv
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def progress(ckpt: Path) -> tuple[int, int]:
    """(phase index, completed epochs overall) recorded in a checkpoint file."""
    run = torch.load(ckpt, map_location="cpu", weights_only=True)["run"]
    return run["phase_index"], run["global_epoch"]


def files(ckpt_dir: Path) -> set[str]:
    return {p.name for p in ckpt_dir.iterdir()} if ckpt_dir.exists() else set()


def temp_files(ckpt_dir: Path) -> list[str]:
    """Checkpoint temp files."""
    return [n for n in files(ckpt_dir) if ".tmp-" in n]


def assert_identical(expected: Path, run: Path) -> None:
    """Same tensors bit for bit, and the same file bytes."""
    a, b = load_file(RunDir(expected).weights), load_file(RunDir(run).weights)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert RunDir(expected).weights.read_bytes() == RunDir(run).weights.read_bytes()
    assert rows(run) == EPOCHS  # one row per epoch: none lost, none duplicated


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 10 images: 16 train (2 steps of 8 per epoch), 4 val."""
    return make_image_folder(tmp_path_factory.mktemp("data") / "d", classes=2, per_class=10)


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run, also a subprocess so both sides run under the same conditions."""
    root = tmp_path_factory.mktemp("straight")
    p = Proc(snugtune("train", str(data), "--out", str(root / "run"), *ARGS), root / "logs")
    assert p.finish() == 0, p.stderr
    return root / "run"


def test_kill_9_at_each_kind_of_moment_then_resume_is_bit_identical(
    data: Path, tmp_path: Path, straight: Path, cache_dir: Path
) -> None:
    """One run killed seven times, each at an exact point (see ``_interruptible.py``)."""
    run, logs, ckpts = tmp_path / "run", tmp_path / "logs", tmp_path / "run" / "checkpoints"
    resume = ("train", "--resume", str(run))

    # 1. During the folder scan: config.yaml saved, no checkpoint.
    kill_at("scan:3", logs, "train", str(data), "--out", str(run), *ARGS)
    assert RunDir(run).config.exists() and not files(ckpts)

    # 1b. --resume without a checkpoint starts over from the saved config. Killed inside the
    #     head phase's feature-cache fill: its records are on disk, the index has none.
    kill_at("fill", logs, *resume)
    (store,) = (cache_dir / "features").glob("*.bin")
    with DataIndex.open(CacheHome(cache_dir)) as index:
        (row,) = [r for r in index.stores() if r.kind == "features"]
    assert store.stat().st_size > 0 and (row.end_bytes, row.records) == (0, 0)
    assert not files(ckpts)

    # 2. The fill starts over (the uncommitted bytes are overwritten). Killed between epochs:
    #    head epoch 1 checkpointed, epoch 2 not started.
    kill_at("saved:1", logs, *resume)
    assert progress(ckpts / "last.pt") == (0, 1) and rows(run) == 1

    # 3. Mid-epoch: after the 1st of the 2 optimizer steps of head epoch 2.
    kill_at("step:1", logs, *resume)
    assert progress(ckpts / "last.pt") == (0, 1) and rows(run) == 1

    # 4. Halfway through writing the head epoch 2 checkpoint: its temp file is partial,
    #    epoch 1 stays the newest, and the epoch 2 row already in metrics.csv is stray.
    kill_at("write:1", logs, *resume)
    assert progress(ckpts / "last.pt") == (0, 1) and temp_files(ckpts) and rows(run) == 2

    # 5. Between the two renames of the phase-boundary checkpoint: no last.pt at all, the
    #    complete new one is .staged.pt, the end of head epoch 2 is prev.pt.
    kill_at("renamed:2", logs, *resume)
    assert files(ckpts) == {"prev.pt", ".staged.pt"}  # the stale temp file was removed
    assert progress(ckpts / "prev.pt") == (0, 2) and progress(ckpts / ".staged.pt") == (1, 2)

    # 6. After the last checkpoint, halfway through writing the final weights.
    kill_at("outputs", logs, *resume)
    assert progress(ckpts / "last.pt") == (2, 3) and rows(run) == 3
    assert not RunDir(run).weights.exists() and not RunDir(run).summary.exists()

    # 7. Finish.
    p = Proc(snugtune(*resume), logs)
    assert p.finish() == 0, p.stderr
    assert_identical(straight, run)


def test_kill_9_then_ctrl_c_during_a_write_then_sigterm_after_a_checkpoint(
    data: Path, tmp_path: Path, straight: Path
) -> None:
    """Stopped three ways, each at an exact moment, each resumable; the result is
    bit-identical. Ctrl-C and SIGTERM reach a process paused at its point (``pause:`` in
    ``_interruptible.py``), which then carries on: no polling, no race with the run's end."""
    run, logs, ckpts = tmp_path / "run", tmp_path / "logs", tmp_path / "run" / "checkpoints"
    resume = ("train", "--resume", str(run))

    # SIGKILL after head epoch 1's checkpoint.
    kill_at("saved:1", logs, "train", str(data), "--out", str(run), *ARGS)
    assert progress(ckpts / "last.pt") == (0, 1)

    # Ctrl-C halfway through writing head epoch 2's checkpoint: the write completes, then
    # exit 130 with that epoch kept.
    p = stop_at("write:1", signal.SIGINT, logs, *resume)
    assert p.popen.returncode == 130, p.stderr
    assert_interrupted(p, run)
    assert progress(ckpts / "last.pt") == (0, 2) and rows(run) == 2

    # SIGTERM right after the next checkpoint (the phase boundary) became last.pt.
    p = stop_at("saved:1", signal.SIGTERM, logs, *resume)
    assert p.popen.returncode == 130, p.stderr
    assert_interrupted(p, run)
    assert progress(ckpts / "last.pt") == (1, 2)

    p = Proc(snugtune(*resume), logs)
    assert p.finish() == 0, p.stderr
    assert_identical(straight, run)


def stop_at(point: str, sig: int, logs: Path, *args: str) -> Proc:
    """Start snugtune paused at ``point``, send it ``sig`` there, let it carry on, wait."""
    marker = logs / f"marker-pause-{point.replace(':', '-')}"
    go = marker.with_name(marker.name + ".go")
    marker.unlink(missing_ok=True)
    go.unlink(missing_ok=True)
    p = Proc(frozen_at(f"pause:{point}", marker, *args), logs)
    p.wait_for(marker.exists, f"pause point {point}")
    os.kill(p.popen.pid, sig)
    go.touch()
    p.finish()
    return p


def assert_interrupted(p: Proc, run: Path) -> None:
    """One line saying how to continue, no traceback, no temp file left."""
    last_line = p.stderr.strip().splitlines()[-1]
    assert last_line.startswith("interrupted") and f"--resume {run}" in last_line, p.stderr
    assert "Traceback" not in p.stderr
    assert not temp_files(RunDir(run).checkpoints)


def test_data_issues_are_listed_in_the_report(tmp_path: Path) -> None:
    """Skipped and converted files reach report.md with their reasons (end to end)."""
    data = make_image_folder(tmp_path / "data", classes=2, per_class=8, size=32, seed=0)
    (data / "class_0" / "empty.jpg").write_bytes(b"")
    (data / "class_1" / "notes.png").write_text("<html>not an image</html>")
    Image.new("CMYK", (32, 32), (10, 200, 30, 0)).save(data / "class_1" / "print.jpg")
    run = tmp_path / "run"
    p = Proc(
        snugtune("train", str(data), "--out", str(run), *FAST, "--epochs", "1"), tmp_path / "logs"
    )
    assert p.finish() == 0, p.stderr
    report = RunDir(run).report_md.read_text()
    section = report.split("## Data issues", 1)[1].split("\n## ", 1)[0]
    assert "2 skipped, 1 converted" in section
    assert "| class_0/empty.jpg | zero-byte file |" in section
    assert "| class_1/notes.png | not an image (HTML) |" in section
    assert "| class_1/print.jpg | CMYK converted to RGB |" in section


# --- failures through the CLI: one line, exit 1, traceback only with --debug ------------------


class Evil:
    """Unpickling this would create a folder: proof that code ran."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.proof),))


def saved_run(data: Path, run: Path) -> Path:
    """A run folder as ``train`` leaves it before the first checkpoint."""
    run.mkdir(parents=True)
    cfg = build_config(overrides={"data": str(data), "out": str(run)})
    RunDir(run).config.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return run


def test_a_malicious_checkpoint_is_refused_by_the_cli_in_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, proof = saved_run(data, tmp_path / "run"), tmp_path / "pwned"
    RunDir(run).checkpoints.mkdir()
    torch.save({"format": 1, "model": Evil(proof)}, RunDir(run).checkpoints / "last.pt")
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: checkpoint ")
    assert "last.pt refused: loading it would call os.makedirs" in err
    assert not proof.exists()


def test_a_full_disk_stops_the_run_in_one_line_and_resume_finishes_it_identically(
    data: Path,
    tmp_path: Path,
    straight: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The 3rd checkpoint (phase boundary) hits ENOSPC partway through its bytes."""
    real_save, calls = torch.save, {"n": 0}

    def save_on_a_filling_disk(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            return real_save(obj, f, *a, **k)

        def full(b: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:4096])
        f.write = full  # what torch.save's writer sees next
        return real_save(obj, f, *a, **k)

    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", save_on_a_filling_disk)
    assert main(["train", str(data), "--out", str(run), *ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: disk full while writing a checkpoint in {run / 'checkpoints'}")
    assert "the previous one (last.pt) is kept" in err and f"--resume {run}" in err
    assert files(RunDir(run).checkpoints) == {"last.pt", "prev.pt"}
    assert progress(RunDir(run).checkpoints / "last.pt") == (0, 2)

    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert_identical(straight, run)


def test_unexpected_failures_are_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(run: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(sys.modules["snugtune.recipe"], "resume", broken)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "error: RuntimeError: boom; second line (run with --debug for the traceback)\n"
    )
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's SIGTERM handler is removed
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "train", "--resume", str(tmp_path)])
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="not a snugtune run"):
        main(["--debug", "train", "--resume", str(tmp_path / "missing")])
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
