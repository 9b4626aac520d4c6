"""Out-of-memory recovery end to end, on the CPU's virtual device budget (``--gpu-memory``).

Budgets are not guessed: the module first measures the peak of the same run at micro-batch 2
and 8 under a budget too large to bind (the guard still counts), and places the test budget
between them, so micro-batch 8 must run out of memory and micro-batch 2 must fit.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from snugtune.cli import main

# A 0.4 MB model whose activations, at 32 px and batch 8, outweigh its weights: the peak
# depends on the micro-batch. All blocks train so every activation is saved for backward.
OOM_FLAGS = [
    "--model",
    "timm:test_efficientnet",
    "--weights",
    "none",
    "--res",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
    "--deterministic",
    "--no-feature-cache",
    "--head-epochs",
    "0",
    "--finetune-epochs",
    "2",
    "--unfreeze",
    "all",
]
FINETUNE = 1  # index of the phase that trains (the head phase has 0 epochs)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the 2 shared cores are oversubscribed otherwise (and it is exact)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(data: Path, out: Path, *extra: str) -> dict[str, Any]:
    assert main(["train", str(data), "--out", str(out), *OOM_FLAGS, *extra]) == 0
    return json.loads((out / "summary.json").read_text())


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def budget(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Measured peaks (bytes) and the budget between micro-batch 2 and 8."""
    root = tmp_path_factory.mktemp("measure")
    peaks = {}
    for mb in (2, 8):
        summary = _train(
            tiny_data, root / f"mb{mb}", "--gpu-memory", "1GiB", "--micro-batch", str(mb)
        )
        phase = summary["phases"][FINETUNE]
        assert phase["oom_recoveries"] == 0 and phase["micro_batch"] == mb
        peaks[mb] = phase["measured_peak_bytes"]
        entry = summary["phases"][0]["measured_peak_bytes"]  # 0 epochs: what is held at entry
    assert peaks[2] < peaks[8], f"the peak must grow with the micro-batch: {peaks}"
    # e.g. entry 0.82 MB, peak 2.29 MB at micro-batch 2, 3.50 MB at 8
    return {"entry": entry, "mb2": peaks[2], "mb8": peaks[8], "budget": (peaks[2] + peaks[8]) // 2}


@pytest.fixture(scope="module")
def recovered(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, budget: dict[str, int]
) -> Path:
    """A run forced to micro-batch 8 under a budget that only fits a smaller one."""
    run = tmp_path_factory.mktemp("oom") / "recovered"
    _train(tiny_data, run, "--gpu-memory", str(budget["budget"]), "--micro-batch", "8")
    return run


def test_recovers_from_oom_without_losing_or_repeating_a_sample(
    recovered: Path, tmp_path: Path, tiny_data: Path, budget: dict[str, int]
) -> None:
    phase = json.loads((recovered / "summary.json").read_text())["phases"][FINETUNE]
    final = phase["micro_batch"]
    assert phase["oom_recoveries"] >= 1 and phase["recoveries"][0]["from"] == 8
    assert 2 <= final < 8 and phase["accumulation"] == -(-8 // final)
    assert phase["budget_bytes"] == budget["budget"]
    assert phase["measured_peak_bytes"] <= budget["budget"]

    n_train = len(json.loads((recovered / "split.json").read_text())["train"])
    rows = _rows(recovered)
    assert [int(r["samples_seen"]) for r in rows] == [n_train, n_train]
    assert phase["samples_seen"] == 2 * n_train
    assert all(int(r["micro_batch"]) == final for r in rows)

    straight = tmp_path / "straight"  # the reduced micro-batch from the start, same budget
    summary = _train(
        tiny_data, straight, "--gpu-memory", str(budget["budget"]), "--micro-batch", str(final)
    )
    assert summary["phases"][FINETUNE]["oom_recoveries"] == 0
    _assert_same_weights(recovered, straight)


def _crash_on_second_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    from snugtune.train.phase import PhaseRunner

    original, calls = PhaseRunner._epoch, {"n": 0}

    def crash(self: Any, *a: Any, **k: Any) -> None:  # epoch 1 (with the recovery) is saved
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return original(self, *a, **k)

    monkeypatch.setattr(PhaseRunner, "_epoch", crash)


def test_resume_after_a_recovery_keeps_the_reduced_micro_batch(
    recovered: Path,
    tmp_path: Path,
    tiny_data: Path,
    budget: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = json.loads((recovered / "summary.json").read_text())["phases"][FINETUNE]
    run = tmp_path / "crashed"
    _crash_on_second_epoch(monkeypatch)
    try:
        code = main(
            [
                "train",
                str(tiny_data),
                "--out",
                str(run),
                *OOM_FLAGS,
                "--gpu-memory",
                str(budget["budget"]),
                "--micro-batch",
                "8",
            ]
        )
    except RuntimeError:
        code = None  # the CLI may let an unexpected error through
    assert code != 0 and not (run / "summary.json").exists()
    assert [int(r["micro_batch"]) for r in _rows(run)] == [expected["micro_batch"]]
    monkeypatch.undo()

    assert main(["train", "--resume", str(run)]) == 0
    phase = json.loads((run / "summary.json").read_text())["phases"][FINETUNE]
    assert phase["micro_batch"] == expected["micro_batch"]
    assert phase["recoveries"] == expected["recoveries"]  # none new after the resume
    assert [int(r["micro_batch"]) for r in _rows(run)] == [expected["micro_batch"]] * 2
    _assert_same_weights(recovered, run)


def test_budget_below_micro_batch_one_fails_fast_saying_what_is_needed(
    tiny_data: Path, tmp_path: Path, budget: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    tight = budget["entry"] + 16 * 1024  # the weights fit, one image's step does not
    code = main(
        [
            "train",
            str(tiny_data),
            "--out",
            str(tmp_path / "tight"),
            *OOM_FLAGS,
            "--gpu-memory",
            str(tight),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and not (tmp_path / "tight" / "summary.json").exists()
    assert err.startswith("error: Budget") and "needed at micro-batch 1" in err
    assert "held before the first step" in err and "--gpu-memory" in err


def test_budget_below_the_weights_fails_before_any_step(
    tiny_data: Path, tmp_path: Path, budget: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            str(tiny_data),
            "--out",
            str(tmp_path / "tiny"),
            *OOM_FLAGS,
            "--gpu-memory",
            str(budget["entry"] // 2),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "already held before the first step" in err and "--gpu-memory" in err
    assert not (tmp_path / "tiny" / "metrics.csv").exists() or not _rows(tmp_path / "tiny")
