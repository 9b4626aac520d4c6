"""Checkpoints: atomic writes, fallback on corruption, refusal of code, full disks, signals."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import signal
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from snugtune.errors import CheckpointError
from snugtune.recipe import checkpoint as ckpt_mod
from snugtune.recipe.checkpoint import load_checkpoint, save_checkpoint


def state(step: int, n: int = 64) -> dict[str, Any]:
    """A small checkpoint-like payload: tensors, nested optimizer-style state, primitives."""
    return {
        "model": {"w": torch.full((n,), float(step)), "b": torch.arange(3, dtype=torch.bfloat16)},
        "optimizer": {
            "state": {0: {"step": torch.tensor(step), "exp_avg": torch.ones(n)}},
            "param_groups": [{"lr": 1e-3, "params": [0]}],
        },
        "run": {"phase_index": 0, "global_epoch": step, "results": []},
        "best": None,
        "versions": {"torch": str(torch.__version__)},
    }


def epoch_of(loaded: dict[str, Any] | None) -> int:
    assert loaded is not None
    return int(loaded["run"]["global_epoch"])


def names(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def flip_tensor_byte(path: Path) -> None:
    """Flip one bit inside the stored bytes of the first tensor (the zip stays valid)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    off = info.header_offset
    name_len = int.from_bytes(raw[off + 26 : off + 28], "little")
    extra_len = int.from_bytes(raw[off + 28 : off + 30], "little")
    raw[off + 30 + name_len + extra_len + 5] ^= 0x01
    path.write_bytes(bytes(raw))


class Evil:
    """Unpickling this would create a folder: proof that code ran."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.proof),))


# --- writing ----------------------------------------------------------------------------


def test_save_rotates_last_to_prev_and_loads_the_newest(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    assert names(d) == {"last.pt"}
    save_checkpoint(d, state(2))
    assert names(d) == {"last.pt", "prev.pt"}
    loaded = load_checkpoint(d)
    assert epoch_of(loaded) == 2 and loaded["format"] == ckpt_mod.FORMAT
    assert torch.equal(loaded["model"]["b"], torch.arange(3, dtype=torch.bfloat16))
    assert loaded["optimizer"]["state"][0]["step"].item() == 2
    assert load_checkpoint(tmp_path / "none") is None


def test_stale_temp_files_of_killed_writers_are_removed_by_the_next_save(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    stale = d / ".staged.pt.tmp-999999999"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    assert epoch_of(load_checkpoint(d)) == 1  # a partial temp file is never read
    save_checkpoint(d, state(2))
    assert names(d) == {"last.pt", "prev.pt"}


def test_an_interrupt_during_the_write_leaves_no_temp_and_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))

    def interrupted(obj: Any, f: Any) -> None:
        f.write(b"PK\x03\x04partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(d, state(2))
    assert names(d) == {"last.pt"} and epoch_of(load_checkpoint(d)) == 1


def test_other_write_errors_propagate_unchanged_and_clean_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))

    def denied(obj: Any, f: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(PermissionError):
        save_checkpoint(d, state(2))
    assert names(d) == {"last.pt"}


# --- loading: corrupt, partial, killed mid-sequence ---------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="truncated"
        ),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.write_bytes(os.urandom(4096)), id="random-bytes"),
        pytest.param(flip_tensor_byte, id="bit-flip-in-tensor-data"),
        pytest.param(lambda p: torch.save({"weights": torch.ones(2)}, p), id="not-snugtune"),
        pytest.param(lambda p: torch.save(torch.ones(2), p), id="not-a-dict"),
    ],
)
def test_a_damaged_last_checkpoint_falls_back_to_the_previous(
    damage: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    save_checkpoint(d, state(2))
    damage(d / "last.pt")
    with caplog.at_level(logging.WARNING, logger="snugtune.recipe.checkpoint"):
        assert epoch_of(load_checkpoint(d)) == 1
    assert "last.pt" in caplog.text and "previous checkpoint" in caplog.text


def test_a_bit_flip_is_caught_by_the_crc_although_torch_load_accepts_it(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    flip_tensor_byte(d / "last.pt")
    torch.load(d / "last.pt", weights_only=True)  # loads silently: why the CRC check exists
    with pytest.raises(CheckpointError, match=r"corrupt \(.*fails its CRC-32 check\)"):
        load_checkpoint(d)


def test_when_every_checkpoint_is_damaged_the_error_lists_them_and_the_fix(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    save_checkpoint(d, state(2))
    for name in ("last.pt", "prev.pt"):
        (d / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    msg = str(e.value)
    assert "last.pt is unreadable" in msg and "prev.pt is unreadable" in msg
    assert f"Delete {d}" in msg and "\n" not in msg


def test_killed_between_the_renames_the_staged_checkpoint_is_the_newest(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    save_checkpoint(d, state(2))
    # state after "last.pt -> prev.pt" of the 3rd save, before ".staged.pt -> last.pt"
    save_checkpoint(tmp_path / "other", state(3))
    os.replace(d / "last.pt", d / "prev.pt")
    shutil.copy(tmp_path / "other" / "last.pt", d / ckpt_mod.STAGED)
    assert epoch_of(load_checkpoint(d)) == 3
    save_checkpoint(d, state(4))  # the sequence carries on normally
    assert names(d) == {"last.pt", "prev.pt"} and epoch_of(load_checkpoint(d)) == 4


def test_killed_before_the_renames_last_is_still_the_newest(tmp_path: Path) -> None:
    d = tmp_path / "ckpt"
    save_checkpoint(d, state(1))
    save_checkpoint(tmp_path / "other", state(2))
    shutil.copy(tmp_path / "other" / "last.pt", d / ckpt_mod.STAGED)  # complete, not promoted
    assert epoch_of(load_checkpoint(d)) == 1  # rerunning epoch 2 gives the same result


# --- untrusted files -----------------------------------------------------------------------


def test_a_malicious_pickle_is_refused_without_running_it_or_falling_back(tmp_path: Path) -> None:
    d, proof = tmp_path / "ckpt", tmp_path / "pwned"
    save_checkpoint(d, state(1))
    save_checkpoint(d, state(2))
    torch.save({"format": ckpt_mod.FORMAT, "model": Evil(proof)}, d / "last.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(d)
    msg = str(e.value)
    assert "last.pt refused" in msg and "os.makedirs" in msg and "run code" in msg
    assert "\n" not in msg
    assert not proof.exists()


def test_a_malicious_previous_checkpoint_is_refused_too(tmp_path: Path) -> None:
    d, proof = tmp_path / "ckpt", tmp_path / "pwned"
    d.mkdir()
    torch.save({"format": ckpt_mod.FORMAT, "x": Evil(proof)}, d / "prev.pt")
    (d / "last.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="prev.pt refused"):
        load_checkpoint(d)
    assert not proof.exists()


# --- full disk -------------------------------------------------------------------------------


class FullDisk(io.RawIOBase):
    """A file that accepts ``limit`` bytes, then fails like a full disk."""

    def __init__(self, f: Any, limit: int, err: int = errno.ENOSPC) -> None:
        self.f, self.limit, self.err, self.n = f, limit, err, 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self.n + len(b) > self.limit:
            raise OSError(self.err, os.strerror(self.err))
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so(
    err: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "run" / "checkpoints"
    save_checkpoint(d, state(1))
    save_checkpoint(d, state(2))
    before = {n: (d / n).read_bytes() for n in ("last.pt", "prev.pt")}
    real_save = torch.save
    # torch.save turns the failed write into a RuntimeError; the cause must still be found
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, FullDisk(f, 600, err)))
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(d, state(3, n=10_000))
    msg = str(e.value)
    assert msg.startswith(f"disk full while writing a checkpoint in {d}")
    assert "the previous one (last.pt) is kept" in msg
    assert f"snugtune train --resume {tmp_path / 'run'}" in msg
    assert names(d) == {"last.pt", "prev.pt"}  # no temp file eating the space
    assert {n: (d / n).read_bytes() for n in before} == before
    monkeypatch.undo()
    assert epoch_of(load_checkpoint(d)) == 2


def test_a_full_disk_on_the_first_checkpoint_says_nothing_was_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, FullDisk(f, 100)))
    with pytest.raises(CheckpointError, match="none was lost"):
        save_checkpoint(tmp_path / "ckpt", state(1))
    assert names(tmp_path / "ckpt") == set()


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if shutil.which("mount") is None or (hasattr(os, "geteuid") and os.geteuid() != 0):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_really_full_disk_keeps_the_previous_checkpoint(tiny_tmpfs: Path) -> None:
    d = tiny_tmpfs / "run" / "checkpoints"
    save_checkpoint(d, state(1))  # ~2 KB
    with pytest.raises(CheckpointError, match=r"disk full .*the previous one \(last.pt\) is kept"):
        save_checkpoint(d, state(2, n=400_000))  # ~3.2 MB, more than the 1 MiB there is
    assert names(d) == {"last.pt"}
    assert epoch_of(load_checkpoint(d)) == 1
    save_checkpoint(d, state(3))  # space was not leaked: the next small save fits
    assert epoch_of(load_checkpoint(d)) == 3


# --- signals -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be set in the main thread",
)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_write_is_delivered_after_the_checkpoint_is_complete(
    sig: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stop(Exception):
        pass

    def stop(signum: int, frame: Any) -> None:
        raise Stop(signum)

    previous = signal.signal(sig, stop)
    try:
        real_save = torch.save

        def save_then_signal(obj: Any, f: Any) -> None:
            os.kill(os.getpid(), sig)  # arrives mid-write
            real_save(obj, f)

        d = tmp_path / "ckpt"
        save_checkpoint(d, state(1))
        monkeypatch.setattr(torch, "save", save_then_signal)
        with pytest.raises(Stop):
            save_checkpoint(d, state(2))
        monkeypatch.undo()
        assert names(d) == {"last.pt", "prev.pt"}
        assert epoch_of(load_checkpoint(d)) == 2  # completed before the signal took effect
        assert signal.getsignal(sig) is stop  # handler restored
    finally:
        signal.signal(sig, previous)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers can only be set in the main thread",
)
def test_an_ignored_signal_stays_ignored_and_is_not_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or `cmd &`
    try:
        real_save = torch.save

        def save_then_signal(obj: Any, f: Any) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            real_save(obj, f)

        monkeypatch.setattr(torch, "save", save_then_signal)
        save_checkpoint(tmp_path / "ckpt", state(1))  # no interrupt: the run goes on
        assert "finishing the checkpoint" not in caplog.text
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)

