"""Interrupted runs lose nothing: real ``kill -9``, Ctrl-C and SIGTERM, then ``--resume``.

Every run here is a real ``python -m snugtune`` subprocess on CPU with ``--deterministic``; the
final ``model.safetensors`` of an interrupted-and-resumed run must be byte-identical to an
uninterrupted one. Kills are timed by polling files, never by sleeping: either a marker file
written by ``_interruptible.py`` (which freezes the process at an exact point), or the run
folder itself (``metrics.csv`` rows, ``checkpoints/``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import FAST

pytestmark = pytest.mark.slow

HELPER = Path(__file__).with_name("_interruptible.py")
ARGS = [*FAST, "--epochs", "2", "--deterministic"]  # 2 phases x 2 epochs, 4 steps per epoch
TIMEOUT_S = 900  # generous: the CI machine is shared


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


def snugtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "snugtune", *args]


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
    path = run / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def progress(ckpt: Path) -> tuple[int, int]:
    """(phase index, completed epochs overall) recorded in a checkpoint file."""
    run = torch.load(ckpt, map_location="cpu", weights_only=True)["run"]
    return run["phase_index"], run["global_epoch"]


def files(ckpt_dir: Path) -> set[str]:
    return {p.name for p in ckpt_dir.iterdir()} if ckpt_dir.exists() else set()


def assert_identical(expected: Path, run: Path) -> None:
    """Same tensors bit for bit, and the same file bytes."""
    a, b = load_file(expected / "model.safetensors"), load_file(run / "model.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert (expected / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    assert rows(run) == 4  # one row per epoch: none lost, none duplicated


@pytest.fixture(scope="module")
def straight(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run, also a subprocess so both sides run under the same conditions."""
    root = tmp_path_factory.mktemp("straight")
    p = Proc(snugtune("train", str(tiny_data), "--out", str(root / "run"), *ARGS), root / "logs")
    assert p.finish() == 0, p.stderr
    return root / "run"


def test_kill_9_at_every_kind_of_moment_then_resume_is_bit_identical(
    tiny_data: Path, tmp_path: Path, straight: Path
) -> None:
    run, logs, ckpts = tmp_path / "run", tmp_path / "logs", tmp_path / "run" / "checkpoints"
    resume = ("train", "--resume", str(run))

    # 1. During the folder scan: config.yaml saved, nothing else.
    kill_at("scan:5", logs, "train", str(tiny_data), "--out", str(run), *ARGS)
    assert (run / "config.yaml").exists() and not (ckpts / "last.pt").exists()

    # 2. Resume with no checkpoint starts over from the saved config; killed halfway through
    #    writing the 2nd checkpoint (end of head epoch 2): epoch 1 stays the newest, and the
    #    2nd row already in metrics.csv must be dropped on resume.
    kill_at("write:2", logs, *resume)
    assert progress(ckpts / "last.pt") == (0, 1)
    assert any(".tmp-" in name for name in files(ckpts)), files(ckpts)
    assert rows(run) == 2

    # 3. Mid-epoch: after the 2nd of 4 optimizer steps of head epoch 2.
    kill_at("step:2", logs, *resume)
    assert progress(ckpts / "last.pt") == (0, 1) and rows(run) == 1  # the stray row dropped

    # 4. Between the two renames of the phase-boundary checkpoint: no last.pt at all, the
    #    complete new one is .staged.pt, the end of head epoch 2 is prev.pt.
    kill_at("renamed:2", logs, *resume)
    assert "last.pt" not in files(ckpts) and ".staged.pt" in files(ckpts)
    assert progress(ckpts / "prev.pt") == (0, 2) and progress(ckpts / ".staged.pt") == (1, 2)

    # 5. Between epochs: finetune epoch 1 checkpointed, epoch 2 not started.
    kill_at("saved:1", logs, *resume)
    assert progress(ckpts / "last.pt") == (1, 3) and rows(run) == 3
    assert not any(".tmp-" in name for name in files(ckpts))  # the stale temp was cleaned

    # 6. After the last checkpoint, halfway through writing the final weights.
    kill_at("outputs", logs, *resume)
    assert progress(ckpts / "last.pt") == (2, 4)
    assert not (run / "model.safetensors").exists() and not (run / "summary.json").exists()

    # 7. Finish.
    p = Proc(snugtune(*resume), logs)
    assert p.finish() == 0, p.stderr
    assert_identical(straight, run)


def test_kill_9_timed_by_the_run_folder_then_resume_is_bit_identical(
    tiny_data: Path, tmp_path: Path, straight: Path
) -> None:
    """No freeze points: kill as soon as the first checkpoint file appears (mid-write or just
    after), and as soon as the 3rd epoch row is logged (its checkpoint is being written)."""
    run, logs, ckpts = tmp_path / "run", tmp_path / "logs", tmp_path / "run" / "checkpoints"
    p = Proc(snugtune("train", str(tiny_data), "--out", str(run), *ARGS), logs)
    p.wait_for(lambda: bool(files(ckpts)), "the first checkpoint file")
    assert p.signal(signal.SIGKILL) == -signal.SIGKILL

    p = Proc(snugtune("train", "--resume", str(run)), logs)
    p.wait_for(lambda: rows(run) >= 3, "the 3rd epoch row")
    assert p.signal(signal.SIGKILL) == -signal.SIGKILL

    p = Proc(snugtune("train", "--resume", str(run)), logs)
    assert p.finish() == 0, p.stderr
    assert_identical(straight, run)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_exit_130_and_leave_a_resumable_run(
    sig: int, tiny_data: Path, tmp_path: Path, straight: Path
) -> None:
    run, logs, ckpts = tmp_path / "run", tmp_path / "logs", tmp_path / "run" / "checkpoints"
    p = Proc(snugtune("train", str(tiny_data), "--out", str(run), *ARGS), logs)
    p.wait_for(lambda: rows(run) >= 2, "the 2nd epoch row")  # its checkpoint may be mid-write
    assert p.signal(sig) == 130, p.stderr
    last_line = p.stderr.strip().splitlines()[-1]
    assert last_line.startswith("interrupted") and f"--resume {run}" in last_line
    assert "Traceback" not in p.stderr
    assert files(ckpts) <= {"last.pt", "prev.pt"}  # no temp file left behind
    assert progress(ckpts / "last.pt")[1] >= 1  # completed epochs are kept

    p = Proc(snugtune("train", "--resume", str(run)), logs)
    assert p.finish() == 0, p.stderr
    assert_identical(straight, run)


def test_data_issues_are_listed_in_the_report(tmp_path: Path) -> None:
    """Skipped and converted files reach report.md with their reasons (end to end)."""
    from PIL import Image

    from snugtune.data import make_image_folder

    data = make_image_folder(tmp_path / "data", classes=2, per_class=8, size=32, seed=0)
    (data / "class_0" / "empty.jpg").write_bytes(b"")
    (data / "class_1" / "notes.png").write_text("<html>not an image</html>")
    Image.new("CMYK", (32, 32), (10, 200, 30, 0)).save(data / "class_1" / "print.jpg")
    run = tmp_path / "run"
    p = Proc(
        snugtune("train", str(data), "--out", str(run), *FAST, "--epochs", "1"), tmp_path / "logs"
    )
    assert p.finish() == 0, p.stderr
    report = (run / "report.md").read_text()
    section = report[report.lower().index("data issues") :]
    for name in ("empty.jpg", "notes.png", "print.jpg"):
        assert name in section, name
    assert "cmyk" in section.lower()
