"""Data-parallel training with ``torchrun`` on the CPU (2 gloo processes).

Checks: the same metrics and weights as one process with the same global batch; only rank 0
writes into the run folder; a rank killed mid-run ends the run (no hang) with the failed rank
named, and the run resumes on a different number of processes; a worker group restarted by
torchrun resumes by itself.

The global batch of 7 over 2 processes gives unequal shares (4 + 3 images), which exercises
the exact gradient scaling; dropout is off because its masks cannot match across a different
split of the batch (a different, equally valid, random draw).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from snugtune.cli import main
from snugtune.rundir import RunDir

from .conftest import FAST

pytestmark = pytest.mark.slow

ARGS = [*FAST, "--batch-size", "7", "--head-epochs", "2", "--finetune-epochs", "1",
        "--head-dropout", "0", "--device", "cpu"]
COMPARED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
METRIC_TOL = 1e-5  # float rounding of sums over 2 shards vs 1; measured ~1e-7
WEIGHT_TOL = 1e-4  # AdamW amplifies rounding over 3 epochs; measured ~4e-6
LAUNCH_TIMEOUT_S = 600

# Run by torchrun in each process: records every write into the run folder (audit hook), and
# kills rank DIE_RANK with SIGKILL at its DIE_AT_EPOCH-th epoch, on the first attempt only.
WORKER = r'''
import os, signal, sys

RUN = os.path.realpath(os.environ["AUDIT_RUN"])
RANK = os.environ.get("RANK", "0")
LOG = open(os.path.join(os.environ["AUDIT_LOGS"], f"writes-rank{RANK}.txt"), "a", buffering=1)
_busy = []

def _under_run(path):
    if isinstance(path, int) or path is None:
        return False
    path = os.fsdecode(os.fspath(path))
    return os.path.realpath(path).startswith(RUN)

def _audit(event, args):
    if _busy:
        return
    _busy.append(1)
    try:
        paths, writing = [], False
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int)
                and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            paths = [path]
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.truncate", "os.link",
                       "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile"):
            writing, paths = True, [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        elif event == "os.mkdir":
            writing, paths = not os.path.isdir(args[0]), [args[0]]
        if writing:
            for p in paths:
                if _under_run(p):
                    LOG.write(f"{event} {os.fsdecode(os.fspath(p))}\n")
    finally:
        _busy.pop()

sys.addaudithook(_audit)

if RANK == os.environ.get("DIE_RANK") and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    import snugtune.recipe.finetune as recipe

    original, calls = recipe.run_epoch, [0]

    def dying(*a, **k):
        calls[0] += 1
        if calls[0] == int(os.environ["DIE_AT_EPOCH"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*a, **k)

    recipe.run_epoch = dying

if os.environ.get("RECORD"):  # each rank's micro-batches and final weights, per phase
    import json, torch
    import snugtune.recipe.finetune as recipe

    run_epoch, train_phase = recipe.run_epoch, recipe._train_phase

    def recording_epoch(*a, **k):
        out = run_epoch(*a, **k)
        with open(os.path.join(os.environ["AUDIT_LOGS"], f"micro-rank{RANK}.jsonl"), "a") as f:
            f.write(json.dumps({"micro": out.micro.size, "seen": out.train.seen,
                                "recoveries": len(out.micro.recoveries)}) + "\n")
        return out

    def recording_phase(cfg, run, setup, state, *a, **k):
        after = train_phase(cfg, run, setup, state, *a, **k)
        torch.save(setup.model.state_dict(), os.path.join(
            os.environ["AUDIT_LOGS"], f"weights-rank{RANK}-phase{state.phase_index}.pt"))
        return after

    recipe.run_epoch, recipe._train_phase = recording_epoch, recording_phase

if RANK == os.environ.get("FAULT_RANK"):  # this rank runs out of memory in every step
    import time, torch
    import snugtune.step.loop as loop

    def failing(*a, **k):
        stamp = os.path.join(os.environ["AUDIT_LOGS"], "fault-time")
        if not os.path.exists(stamp):
            with open(stamp, "w") as f:
                f.write(str(time.time()))
        raise torch.OutOfMemoryError("injected on one rank")

    loop._accumulate = failing

from snugtune.cli import main
sys.exit(main())
'''


def torchrun(tmp: Path, run: Path, args: list[str], *, nproc: int = 2,
             extra_env: dict[str, str] | None = None,
             restarts: int = 0) -> tuple[subprocess.CompletedProcess[str], float]:
    """Launch ``snugtune ARGS`` under torchrun (standalone rendezvous: a free port)."""
    script = tmp / "worker.py"
    script.write_text(WORKER)
    logs = tmp / "audit"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "AUDIT_RUN": str(run), "AUDIT_LOGS": str(logs), **(extra_env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", f"--max-restarts={restarts}", str(script), *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    return proc, time.monotonic() - t0


def rows(run: Path) -> list[dict[str, str]]:
    with RunDir(run).metrics_csv.open() as f:
        return list(csv.DictReader(f))


def assert_same_training(run: Path, reference: Path) -> None:
    got, want = rows(run), rows(reference)
    assert [(r["phase"], r["epoch"]) for r in got] == [(r["phase"], r["epoch"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["samples_seen"] == w["samples_seen"]
        for col in COMPARED:
            assert float(g[col]) == pytest.approx(float(w[col]), abs=METRIC_TOL), (g["epoch"], col)
    a, b = load_file(RunDir(run).weights), load_file(RunDir(reference).weights)
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= WEIGHT_TOL


def written(tmp: Path, rank: int) -> list[str]:
    """Writes a rank made into the run folder. The feature cache's lock file is left out: every
    rank takes the ``flock`` of the store (opening the file rank 0 created, ``a+b``) to read
    it safely, and writes nothing to it."""
    path = tmp / "audit" / f"writes-rank{rank}.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [w for w in lines if not re.search(r"^open .*/feature_cache/[^/]+/lock$", w)]


def files(run: Path) -> set[str]:
    # TensorBoard event files are named by time, host and pid: compare their folder only
    return {re.sub(r"events\.out\.tfevents\..*", "events", str(p.relative_to(run)))
            for p in run.rglob("*")}


@pytest.fixture(scope="module")
def reference(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, the same global batch."""
    run = tmp_path_factory.mktemp("single") / "run"
    assert main(["train", str(tiny_data), "--out", str(run), *ARGS]) == 0
    return run


def test_two_processes_train_like_one_and_only_rank_0_writes(
    reference: Path, tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc, _ = torchrun(tmp_path, run, ["train", str(tiny_data), "--out", str(run), *ARGS])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_training(run, reference)
    assert json.loads(RunDir(run).summary.read_text())["processes"] == 2
    assert files(run) == files(reference)
    rank0 = written(tmp_path, 0)
    assert any("checkpoints" in w for w in rank0) and any("metrics.csv" in w for w in rank0)
    assert written(tmp_path, 1) == [], "rank 1 wrote into the run folder"


def test_a_killed_rank_ends_the_run_then_it_resumes_on_one_process(
    reference: Path, tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc, seconds = torchrun(tmp_path, run, ["train", str(tiny_data), "--out", str(run), *ARGS],
                             extra_env={"DIE_RANK": "1", "DIE_AT_EPOCH": "2"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert seconds < LAUNCH_TIMEOUT_S / 2  # ended, did not wait for a timeout
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", out) and "SIGKILL" in out, out[-3000:]
    assert (RunDir(run).checkpoints / "last.pt").exists() and not RunDir(run).summary.exists()
    assert len(rows(run)) == 1  # the first epoch was checkpointed, the second never finished

    assert main(["train", "--resume", str(run)]) == 0
    assert_same_training(run, reference)
    assert json.loads(RunDir(run).summary.read_text())["processes"] == 1


def test_a_worker_group_restarted_by_torchrun_resumes_by_itself(
    reference: Path, tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # the shared rendezvous store breaks restarts (PyTorch issues 135712, 167288)
    env = {"DIE_RANK": "1", "DIE_AT_EPOCH": "2", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    proc, _ = torchrun(tmp_path, run, ["train", str(tiny_data), "--out", str(run), *ARGS],
                       extra_env=env, restarts=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming" in proc.stderr
    assert_same_training(run, reference)
    assert written(tmp_path, 1) == [], "rank 1 wrote into the run folder"


# Full fine-tuning of a 0.4 MB model at 32 px: activations outweigh weights (tests/integration/
# test_oom.py); a global batch of 16 gives each rank 8, at micro-batch 8: accumulation 1, so
# every backward is the step's last.
OOM_ARGS = ["--model", "timm:test_efficientnet", "--weights", "none", "--res", "32",
            "--workers", "0", "--no-progress", "--device", "cpu", "--deterministic",
            "--no-feature-cache", "--head-epochs", "0", "--finetune-epochs", "2",
            "--finetune-trainable", "all", "--head-dropout", "0"]


def _peak_at(data: Path, out: Path, micro: int) -> int:
    """The fine-tuning peak of one process at ``micro`` (8 images per step, no cap)."""
    assert main(["train", str(data), "--out", str(out), *OOM_ARGS, "--batch-size", "8",
                 "--gpu-memory", "1GiB", "--micro-batch", str(micro)]) == 0
    return int(json.loads(RunDir(out).summary.read_text())["phases"][1]["measured_peak_bytes"])


def test_an_oom_in_every_ranks_last_backward_halves_both_and_keeps_them_equal(
    tiny_data: Path, tmp_path: Path
) -> None:
    budget = (_peak_at(tiny_data, tmp_path / "mb2", 2) + _peak_at(tiny_data, tmp_path / "mb8", 8)) // 2
    run = tmp_path / "run"
    proc, _ = torchrun(tmp_path, run, ["train", str(tiny_data), "--out", str(run), *OOM_ARGS,
                                       "--batch-size", "16", "--gpu-memory", str(budget),
                                       "--micro-batch", "8"], extra_env={"RECORD": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_train = len(json.loads(RunDir(run).split.read_text())["train"])
    assert [int(r["samples_seen"]) for r in rows(run)] == [n_train, n_train]  # each image once
    finetune = json.loads(RunDir(run).summary.read_text())["phases"][1]
    assert finetune["oom_recoveries"] >= 1 and finetune["recoveries"][0]["from"] == 8
    epochs = [[json.loads(line) for line in (tmp_path / "audit" / f"micro-rank{r}.jsonl")
               .read_text().splitlines()] for r in range(2)]
    assert [e["micro"] for e in epochs[0]] == [e["micro"] for e in epochs[1]]  # halved together
    # epoch 1's second step has 7 images a rank; the first 8-image step with AdamW's state
    # (epoch 2) runs out of memory, on both ranks, and both finish the phase halved
    assert all(2 <= ranks[-1]["micro"] < 8 and ranks[-1]["recoveries"] >= 1 for ranks in epochs)
    a, b = (torch.load(tmp_path / "audit" / f"weights-rank{r}-phase1.pt") for r in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fault_on_one_rank_ends_both_within_a_minute_with_its_reason(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc, _ = torchrun(tmp_path, run, ["train", str(tiny_data), "--out", str(run), *ARGS],
                       extra_env={"FAULT_RANK": "1"})
    ended = time.time()
    assert proc.returncode != 0
    fault = float((tmp_path / "audit" / "fault-time").read_text())
    assert ended - fault < 60
    # one error from each rank (their lines may interleave), one cause
    errors = re.findall(r"error: (rank 1 could not finish its share of step 1 and every rank "
                        r"stopped: BudgetError: )?out of memory at micro-batch 1", proc.stderr)
    assert sorted(errors) == ["", "rank 1 could not finish its share of step 1 and every rank "
                              "stopped: BudgetError: "], proc.stderr[-3000:]
