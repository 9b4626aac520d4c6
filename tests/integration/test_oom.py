"""Out-of-memory recovery end to end, on the CPU's virtual device budget (``--gpu-memory``).

Budgets are not guessed: the module first measures the peak of the same run at micro-batch 2
and 8 under a budget too large to bind (the guard still counts), and places the test budget
between them, so micro-batch 8 must run out of memory and micro-batch 2 must fit. Every run
forces its micro-batch (``--micro-batch``: no planning, guard on), so the runtime path is what
is tested, whatever the planner would choose.
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
from snugtune.rundir import RunDir

# A 0.4 MB model whose activations, at 32 px and batch 8, outweigh its weights: the peak
# depends on the micro-batch. All blocks train so every activation is saved for backward.
# fmt: off
OOM_FLAGS = ["--model", "timm:test_efficientnet", "--weights", "none", "--res", "32",
             "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu",
             "--deterministic", "--no-feature-cache", "--head-epochs", "0",
             "--finetune-epochs", "2", "--finetune-trainable", "all"]
# fmt: on
FINETUNE = 1  # index of the phase that trains (the head phase has 0 epochs)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the 2 shared cores are oversubscribed otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _argv(data: Path, out: Path, budget: int | str, micro_batch: int) -> list[str]:
    return ["train", str(data), "--out", str(out), *OOM_FLAGS,
            "--gpu-memory", str(budget), "--micro-batch", str(micro_batch)]  # fmt: skip


def _train(data: Path, out: Path, budget: int | str, micro_batch: int) -> dict[str, Any]:
    assert main(_argv(data, out, budget, micro_batch)) == 0
    return json.loads(RunDir(out).summary.read_text())


def _finetune(run: Path) -> dict[str, Any]:
    return json.loads(RunDir(run).summary.read_text())["phases"][FINETUNE]


def _rows(run: Path) -> list[dict[str, str]]:
    with RunDir(run).metrics_csv.open() as f:
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
    peaks, entry = {}, 0
    for mb in (2, 8):
        summary = _train(tiny_data, root / f"mb{mb}", "1GiB", mb)
        phase = summary["phases"][FINETUNE]
        assert phase["oom_recoveries"] == 0 and phase["micro_batch"] == mb
        peaks[mb] = phase["measured_peak_bytes"]
        entry = phase["measured_entry_bytes"]  # held before the first step (the weights)
    assert peaks[2] < peaks[8], f"the peak must grow with the micro-batch: {peaks}"
    # measured: entry 0.41 MB; peak 2.70 MB at micro-batch 2, 3.91 MB at 8 (3.22 MB at 4)
    return {"entry": entry, "budget": (peaks[2] + peaks[8]) // 2}


@pytest.fixture(scope="module")
def recovered(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory, budget: dict[str, int]
) -> Path:
    """A run forced to micro-batch 8 under a budget that only fits a smaller one."""
    run = tmp_path_factory.mktemp("oom") / "recovered"
    _train(tiny_data, run, budget["budget"], 8)
    return run


def test_recovers_from_oom_without_losing_or_repeating_a_sample(
    recovered: Path, tmp_path: Path, tiny_data: Path, budget: dict[str, int]
) -> None:
    phase = _finetune(recovered)
    final = phase["micro_batch"]
    assert phase["oom_recoveries"] >= 1 and phase["recoveries"][0]["from"] == 8
    assert 2 <= final < 8 and phase["accumulation"] == -(-8 // final)
    assert phase["budget_bytes"] == budget["budget"]
    assert phase["measured_peak_bytes"] <= budget["budget"]

    n_train = len(json.loads(RunDir(recovered).split.read_text())["train"])
    rows = _rows(recovered)
    assert [int(r["samples_seen"]) for r in rows] == [n_train, n_train]
    assert phase["samples_seen"] == 2 * n_train
    assert all(int(r["micro_batch"]) == final for r in rows)

    # The reduced micro-batch from the start, same budget. Not bit-identical when the OOM
    # came after step 1 (optimizer state is created at the end of step 1, so step 1 may fit
    # at micro-batch 8): accumulation over other chunks rounds differently (~1e-7).
    straight = tmp_path / "straight"
    summary = _train(tiny_data, straight, budget["budget"], final)
    assert summary["phases"][FINETUNE]["oom_recoveries"] == 0
    _assert_same_weights(recovered, straight)


def _crash_on_second_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    import snugtune.recipe.finetune as recipe

    original, calls = recipe.run_epoch, {"n": 0}

    def crash(*a: Any, **k: Any) -> None:  # epoch 1 (with the recovery) is saved
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return original(*a, **k)

    monkeypatch.setattr(recipe, "run_epoch", crash)


def test_resume_after_a_recovery_keeps_the_reduced_micro_batch(
    recovered: Path,
    tmp_path: Path,
    tiny_data: Path,
    budget: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = _finetune(recovered)
    run = tmp_path / "crashed"
    _crash_on_second_epoch(monkeypatch)
    try:
        code = main(_argv(tiny_data, run, budget["budget"], 8))
    except RuntimeError:
        code = None  # with --debug the CLI lets the unexpected error through
    assert code != 0 and not RunDir(run).summary.exists()
    assert [int(r["micro_batch"]) for r in _rows(run)] == [expected["micro_batch"]]
    monkeypatch.undo()

    assert main(["train", "--resume", str(run)]) == 0
    phase = _finetune(run)
    assert phase["micro_batch"] == expected["micro_batch"]
    assert phase["recoveries"] == expected["recoveries"]  # none new after the resume
    assert [int(r["micro_batch"]) for r in _rows(run)] == [expected["micro_batch"]] * 2
    _assert_same_weights(recovered, run)


def test_budget_below_micro_batch_one_fails_fast_saying_what_is_needed(
    tiny_data: Path, tmp_path: Path, budget: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    tight = budget["entry"] + 16 * 1024  # the weights fit, one image's step does not
    assert main(_argv(tiny_data, tmp_path / "tight", tight, 8)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "tight" / "summary.json").exists()
    assert err.startswith("error: Budget") and "needed at micro-batch 1" in err
    assert "held before the first step" in err and "--gpu-memory" in err


def test_budget_below_the_weights_fails_before_any_step(
    tiny_data: Path, tmp_path: Path, budget: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(tiny_data, tmp_path / "tiny", budget["entry"] // 2, 8)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already held before the first step" in err and "--gpu-memory" in err
    assert not (tmp_path / "tiny" / "metrics.csv").exists() or not _rows(tmp_path / "tiny")


def test_evaluate_under_a_budget_starts_where_training_ended_and_reports_the_same(
    recovered: Path, tiny_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from snugtune import evaluate
    from snugtune.errors import BudgetError
    from snugtune.infer import training_limits

    free = evaluate(recovered, tiny_data)
    base = _held_with_the_model(recovered)
    trained = _finetune(recovered)["micro_batch"]
    assert training_limits(RunDir(recovered), torch.device("cpu"), None) == (
        json.loads(RunDir(recovered).summary.read_text())["phases"][FINETUNE]["budget_bytes"],
        trained)  # without --gpu-memory: the run's budget, at the micro-batch it ended at
    caplog.set_level(logging.INFO, logger="snugtune.infer.run")
    # a batch of 64 (all 36 images) forwarded ``trained`` at a time: an inference forward
    # needs less than the training step that fitted at that size, so nothing halves
    tight = evaluate(recovered, tiny_data, batch_size=64, gpu_memory=base + 1_000_000)
    assert "at most" not in caplog.text
    assert tight.accuracy == free.accuracy and tight.confusion == free.confusion
    with pytest.raises(BudgetError, match="needed at micro-batch 1"):
        evaluate(recovered, tiny_data, gpu_memory=base + 100_000)
    assert main(["evaluate", str(recovered), str(tiny_data), "--gpu-memory", "lots"]) == 2


def _held_with_the_model(run: Path) -> int:
    """Bytes this process holds already (counted by the budget) plus the run's model."""
    from snugtune.memory.guard import VirtualDeviceBudget

    weights = sum(t.numel() * t.element_size() for t in load_file(RunDir(run).weights).values())
    with VirtualDeviceBudget(None) as held:
        pass
    return held.entry_bytes + weights


def test_predict_batches_under_a_budget_takes_folders_and_names_a_bad_path(
    recovered: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from snugtune import predict

    files = sorted(tiny_data.rglob("*.png"))[:10]
    one_by_one = predict(recovered, files, top_k=2, batch_size=1)
    batched = predict(recovered, files, top_k=2)
    tight = predict(recovered, files, top_k=2, gpu_memory=_held_with_the_model(recovered) + 1_000_000)
    for a, b, c in zip(one_by_one, batched, tight, strict=True):
        assert a.path == b.path == c.path and a.labels == b.labels == c.labels
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert c.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    folder = predict(recovered, [tiny_data / "class_1"])  # a folder: the images under it
    assert [p.path for p in folder] == sorted(str(f) for f in (tiny_data / "class_1").glob("*.png"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    for argv in ([str(files[0]), str(bad)], [str(tmp_path / "missing.png")], [str(tmp_path / "x")]):
        (tmp_path / "x").mkdir(exist_ok=True)  # a folder without images
        capsys.readouterr()
        assert main(["predict", str(recovered), *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and Path(argv[-1]).name in err and "rescans" not in err, err


class _CapSpy:
    """Records, for each device step called, the budgets of the caps open at that moment."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from snugtune.memory import meter

        self.open: list[int | None] = []
        self.calls: list[tuple[str, tuple[int | None, ...]]] = []
        enter, exit_ = meter.PeakMeter.__enter__, meter.PeakMeter.__exit__

        def entering(m: Any) -> Any:
            self.open.append(m.budget_bytes)
            return enter(m)

        def exiting(m: Any, *a: Any) -> Any:
            self.open.pop()
            return exit_(m, *a)

        monkeypatch.setattr(meter.PeakMeter, "__enter__", entering)
        monkeypatch.setattr(meter.PeakMeter, "__exit__", exiting)
        self.monkeypatch = monkeypatch

    def watch(self, target: str, name: str) -> None:
        module, attr = target.rsplit(".", 1)
        import importlib

        owner = importlib.import_module(module)
        original = getattr(owner, attr)

        def spied(*a: Any, **k: Any) -> Any:
            self.calls.append((name, tuple(self.open)))
            return original(*a, **k)

        self.monkeypatch.setattr(owner, attr, spied)


def test_every_device_step_of_a_run_and_of_its_uses_runs_under_the_cap(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feature-cache fill, the time budget's forward measurement, training, evaluation
    and the final predictions of ``train``, then ``evaluate``, ``evaluate --tta``, ``predict``
    and ``lr-find``: each runs while the ``--gpu-memory`` cap is held (the virtual device on
    the CPU; on CUDA the same ``PeakMeter`` caps the allocator). The uses of a run hold the
    budget it trained under when none is given."""
    spy = _CapSpy(monkeypatch)
    from snugtune.recipe.inputs import _Encoder

    fill = _Encoder.__call__

    def filling(self: Any, x: Any) -> Any:
        spy.calls.append(("fill", tuple(spy.open)))
        return fill(self, x)

    monkeypatch.setattr(_Encoder, "__call__", filling)
    spy.watch("snugtune.recipe.timing.measure_forward", "time budget")
    spy.watch("snugtune.recipe.finetune.train_step", "train")
    spy.watch("snugtune.recipe.finetune.evaluate", "validate")
    spy.watch("snugtune.infer.run.evaluate", "predict")
    spy.watch("snugtune.recipe.lr_range.train_step", "lr-find")
    run, budget = tmp_path / "run", 1 << 30
    flags = ["--model", "timm:test_resnet", "--weights", "none", "--res", "32", "--workers", "0",
             "--no-progress", "--device", "cpu", "--batch-size", "8", "--head-epochs", "1",
             "--finetune-epochs", "1"]
    assert main(["train", str(tiny_data), "--out", str(run), *flags, "--gpu-memory", "1GiB",
                 "--time-budget", "30m"]) == 0
    assert main(["evaluate", str(run)]) == 0
    assert main(["evaluate", str(run), "--tta"]) == 0
    image = next(p for p in tiny_data.rglob("*.png"))
    assert main(["predict", str(run), str(image)]) == 0
    assert main(["lr-find", str(tiny_data), *flags, "--gpu-memory", "1GiB", "--steps", "3"]) == 0
    names = {name for name, _ in spy.calls}
    assert names == {"fill", "time budget", "train", "validate", "predict", "lr-find"}
    uncapped = [(name, caps) for name, caps in spy.calls if budget not in caps]
    assert uncapped == []
