"""End to end through the CLI: train, outputs, evaluate, predict, resume, errors."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from snugtune.cli import main
from snugtune.recipe.state import RunState
from snugtune.rundir import RunDir

from .conftest import FAST

EXPECTED = ["config.yaml", "metrics.csv", "metrics.json", "summary.json", "model.safetensors",
            "model_card.json", "learning_curves.png", "confusion_matrix.png", "hardest_val.png",
            "report.md", "report.html", "plan.json", "split.json", "scan.json",
            "checkpoints/last.pt"]


def test_train_writes_every_promised_file(tiny_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny_data), "--out", str(run), *FAST, "--epochs", "2"]) == 0
    for name in EXPECTED:
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard events"
    assert len(json.loads(RunDir(run).metrics_json.read_text())) == 4  # 2 phases x 2 epochs
    summary = json.loads(RunDir(run).summary.read_text())
    assert summary["classes"] == ["class_0", "class_1", "class_2"]
    assert [p["name"] for p in summary["phases"]] == ["head", "finetune"]
    assert all(p["epochs_run"] == 2 and p["seconds"] > 0 for p in summary["phases"])
    assert 0.0 <= summary["best_val_accuracy"] <= 1.0
    header = RunDir(run).metrics_csv.read_text().splitlines()[0]
    for col in ("phase", "train_loss", "val_accuracy", "lr", "seconds", "images_per_s", "samples_seen"):
        assert col in header
    card = json.loads(RunDir(run).card.read_text())
    assert card["classes"] == summary["classes"] and card["preprocessing"]["size"] == 32

    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert 0.0 <= ev["accuracy"] <= 1.0 and len(ev["per_class"]) == 3
    img = next((tiny_data / "class_1").iterdir())
    assert main(["predict", str(run), str(img), "--top-k", "2", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds[0]["top"]) == 2


def test_the_cache_command_shows_the_shared_cache_and_clears_it(
        tiny_data: Path, tmp_path: Path, cache_dir: Path, capsys) -> None:
    assert main(["train", str(tiny_data), "--out", str(tmp_path / "run"), *FAST,
                 "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["cache", "--json"]) == 0
    usage = json.loads(capsys.readouterr().out)
    assert usage["path"] == str(cache_dir) and usage["files"] == 36
    stores = {s["kind"]: s for s in usage["stores"]}
    assert sorted(stores) == ["features", "images"]
    assert stores["features"]["records"] == 36 and stores["features"]["bytes"] > 0
    assert stores["images"]["records"] == 36  # 32 px images: read from their files
    assert usage["total_bytes"] == sum(usage["bytes"].values()) > 0
    assert main(["cache"]) == 0
    text = capsys.readouterr().out
    assert str(cache_dir) in text and "36 files checked" in text and "features" in text
    other = tmp_path / "elsewhere"  # --cache-dir names another one
    assert main(["doctor", str(tiny_data), "--cache-dir", str(other)]) == 0
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 36
    assert main(["cache", "--clear"]) == 0
    assert "freed" in capsys.readouterr().out and not cache_dir.exists()


def test_training_learns_the_tiny_task(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # A random tiny backbone: its frozen features alone do not separate the classes, so the
    # fine-tuning phase trains all of it.
    args = [*FAST, "--head-epochs", "2", "--finetune-epochs", "6", "--lr", "1e-2", "--finetune-trainable", "all"]
    assert main(["train", str(tiny_data), "--out", str(run), *args]) == 0
    assert json.loads(RunDir(run).summary.read_text())["best_val_accuracy"] >= 0.8


@pytest.mark.parametrize("res", ["32", "16"])  # 16: the 32 px images come from the store
def test_resume_after_a_stopped_run_gives_identical_weights(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path, res: str
) -> None:
    args = [*FAST, "--epochs", "2", "--deterministic", "--res", res]
    straight = tmp_path / "straight"
    assert main(["train", str(tiny_data), "--out", str(straight), *args]) == 0
    stored = json.loads(RunDir(straight).summary.read_text())["decoded_images"]["bytes"]
    assert (stored > 0) == (res == "16")

    import snugtune.recipe.finetune as recipe

    original, calls = recipe.run_epoch, {"n": 0}

    def crash_on_third_epoch(*a, **k):  # two epochs checkpointed, then a "crash"
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(*a, **k)

    monkeypatch.setattr(recipe, "run_epoch", crash_on_third_epoch)
    stopped = tmp_path / "stopped"
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["--debug", "train", str(tiny_data), "--out", str(stopped), *args])
    assert not RunDir(stopped).weights.exists()
    monkeypatch.setattr(recipe, "run_epoch", original)
    assert main(["cache", "--clear"]) == 0  # the resumed run decodes and stores them again
    assert main(["train", "--resume", str(stopped)]) == 0

    a, b = load_file(RunDir(straight).weights), load_file(RunDir(stopped).weights)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    rows = RunDir(stopped).metrics_csv.read_text().splitlines()
    assert len(rows) == 1 + 4  # header + one row per epoch, none duplicated


def test_existing_run_is_not_overwritten(tiny_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny_data), "--out", str(run), *FAST, "--epochs", "1"]) == 0
    assert main(["train", str(tiny_data), "--out", str(run), *FAST]) == 1
    assert "--resume" in capsys.readouterr().err


def test_config_errors_are_listed_together_with_exit_code_2(tiny_data: Path, capsys) -> None:
    code = main(["train", str(tiny_data), "--val-split", "1.5", "--batch-size", "0",
                 "--augment", "zoom_range=3", "--gpu-memory", "lots"])
    err = capsys.readouterr().err
    assert code == 2
    for flag in ("--val-split", "--batch-size", "augment.zoom_range", "--gpu-memory"):
        assert flag in err
    assert err.count("\n") == 1  # one line


def test_a_batch_larger_than_the_training_set_is_reported_as_one_micro_batch(
    tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "big_batch"
    args = [*FAST, "--head-epochs", "0", "--finetune-epochs", "1", "--batch-size", "64"]
    assert main(["train", str(tiny_data), "--out", str(run), *args]) == 0
    finetune = json.loads(RunDir(run).summary.read_text())["phases"][1]
    train = len(json.loads(RunDir(run).split.read_text())["train"])
    assert finetune["micro_batch"] == train and finetune["accumulation"] == 1


class VirtualClock:
    """``time.perf_counter`` advancing by ``tick`` seconds per reading: the recipe's timing
    code then sees the same durations on any machine, under any load."""

    def __init__(self, tick: float) -> None:
        self.tick, self.now = tick, 0.0

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_a_time_budget_fits_the_phases_and_the_report_says_how(tiny_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import snugtune.recipe.cache
    import snugtune.recipe.finetune as recipe
    import snugtune.recipe.inputs
    import snugtune.recipe.timing

    clock = VirtualClock(0.15)  # every reading of the run's clock is 150 ms later: deterministic
    for module in (recipe, snugtune.recipe.timing, snugtune.recipe.inputs, snugtune.recipe.cache):
        monkeypatch.setattr(module, "time", clock)
    run = tmp_path / "run"
    original = recipe.run_epoch

    def crash_in_finetuning(*a, **k):  # after one fitted epoch: the resumed run keeps its fit
        if k["phase"].name == "finetune" and k["state"].phase.epoch == 1:
            raise RuntimeError("simulated crash")
        return original(*a, **k)

    monkeypatch.setattr(recipe, "run_epoch", crash_in_finetuning)
    args = ["--debug", "train", str(tiny_data), "--out", str(run), *FAST, "--time-budget", "12s"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(args)
    monkeypatch.setattr(recipe, "run_epoch", original)
    fitted = RunState.from_dict(torch.load(RunDir(run).checkpoints / "last.pt",
                                           weights_only=False)["run"]).phase
    assert fitted.epoch == 1 and fitted.steps is not None and fitted.epochs is not None
    assert main(["train", "--resume", str(run)]) == 0
    summary = json.loads(RunDir(run).summary.read_text())
    assert summary["time_budget"] == 12.0
    for p in summary["phases"]:
        assert p["epochs_planned"] >= p["epochs_run"] >= 1 and p["predicted_seconds"] > 0
    assert set(summary["time_plan"]) == {"feature cache", "finetune"}  # kept on resume
    assert 0 < sum(summary["time_plan"].values()) < 12.0
    report = RunDir(run).report_md.read_text()
    assert "time budget 12.0 s" in report and "(planned " in report and ", predicted " in report


def test_a_time_budget_too_small_for_one_epoch_is_refused_up_front(tiny_data: Path, tmp_path: Path,
                                                                    capsys) -> None:
    code = main(["train", str(tiny_data), "--out", str(tmp_path / "run"), *FAST,
                 "--time-budget", "0.5s"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot cover one epoch of phase 'head'" in err
    assert "--time-budget" in err and "or more" in err
    assert not RunDir(tmp_path / "run").checkpoints.exists()


def _sides(run: Path, copied: Path) -> set[str]:
    """The sides of the split the copies of ``copied`` landed on."""
    split = json.loads(RunDir(run).split.read_text())
    return {side for side, rows in split.items() for path, _ in rows
            if Path(path).parent.name == "class_2" and Path(path).read_bytes() == copied.read_bytes()}


def test_the_report_lists_copies_across_the_split_and_the_hardest_images(
        tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    first = sorted((data / "class_0").iterdir())[0]
    shutil.copy(first, data / "class_1" / "stray.png")  # one picture in two classes
    copied = sorted((data / "class_2").iterdir())[0]
    for i in range(6):  # seven copies in one class: the plain split puts them on both sides
        shutil.copy(copied, data / "class_2" / f"copy_{i}.png")
    plain = tmp_path / "plain"
    assert main(["train", str(data), "--out", str(plain), *FAST, "--epochs", "1",
                 "--no-group-split"]) == 0
    assert _sides(plain, copied) == {"train", "val"}  # the test's premise
    rd = RunDir(plain)
    report = rd.report_md.read_text()
    assert "## Data doctor" in report
    assert "| conflicting labels | 1 | 1 |" in report and "| leakage | 1 | 6 |" in report
    assert f"class_1{os.sep}stray.png (class_1, " in report  # named under the data folder
    assert rd.hardest_val.is_file() and "![validation images with the highest loss]" in report

    run = tmp_path / "run"  # the default split keeps each group of copies on one side
    assert main(["train", str(data), "--out", str(run), *FAST, "--epochs", "1"]) == 0
    assert len(_sides(run, copied)) == 1
    report = RunDir(run).report_md.read_text()
    assert "| leakage | 0 | 0 |" in report and "| conflicting labels | 1 | 1 |" in report
    assert "kept 2 groups of copies on one side" in report
