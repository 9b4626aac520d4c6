"""The feature cache end to end: same head as uncached training, reused on resume, reported."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from snugtune.cli import main
from snugtune.rundir import RunDir

from .conftest import FAST

NO_AUG = ["--augment", "rotation_range=0", "--augment", "width_shift_range=0", "--augment",
          "height_shift_range=0", "--augment", "zoom_range=0", "--augment", "horizontal_flip=false"]
HEAD_ONLY = ["--head-epochs", "3", "--finetune-epochs", "0", "--lr", "3e-3", "--deterministic"]


def _summary(run: Path) -> dict:
    return json.loads(RunDir(run).summary.read_text())


def test_cached_head_training_matches_uncached(tiny_data: Path, tmp_path: Path) -> None:
    runs = {}
    for name, extra in (("cached", []), ("images", ["--no-feature-cache"])):
        runs[name] = tmp_path / name
        args = ["train", str(tiny_data), "--out", str(runs[name]), *FAST, *NO_AUG, *HEAD_ONLY, *extra]
        assert main(args) == 0
    cached, images = _summary(runs["cached"]), _summary(runs["images"])
    cache = cached["phases"][0]["feature_cache"]
    assert cache["used"] and cache["misses"] > 0
    assert images["phases"][0]["feature_cache"]["used"] is False
    assert cached["phases"][1]["feature_cache"] is None  # backbone trains: not applicable
    a, b = load_file(runs["cached"] / "model.safetensors"), load_file(runs["images"] / "model.safetensors")
    for k in a:
        if k.startswith("backbone."):
            assert torch.equal(a[k], b[k]), k
        else:  # fp16 feature storage: the head differs by float noise only
            assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), (k, (a[k] - b[k]).abs().max())
    assert cached["best_val_accuracy"] == pytest.approx(images["best_val_accuracy"])
    rows_c = (runs["cached"] / "metrics.csv").read_text().splitlines()[1:]
    rows_i = (runs["images"] / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows_c) == len(rows_i) == 3
    report = (runs["cached"] / "report.md").read_text()
    assert "Feature cache" in report and "hit_rate" in report


def test_resume_inside_a_cached_phase_reuses_the_cache(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*FAST, *HEAD_ONLY]
    straight = tmp_path / "straight"
    assert main(["train", str(tiny_data), "--out", str(straight), *args]) == 0

    import snugtune.recipe.finetune as recipe

    original, calls = recipe.run_epoch, {"n": 0}

    def crash_on_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return original(*a, **k)

    monkeypatch.setattr(recipe, "run_epoch", crash_on_second_epoch)
    stopped = tmp_path / "stopped"
    try:  # the CLI may map the error to an exit status
        assert main(["train", str(tiny_data), "--out", str(stopped), *args]) != 0
    except RuntimeError as e:
        assert "simulated crash" in str(e)
    assert calls["n"] == 2 and not RunDir(stopped).weights.exists()
    monkeypatch.setattr(recipe, "run_epoch", original)
    assert main(["train", "--resume", str(stopped)]) == 0

    cache = _summary(stopped)["phases"][0]["feature_cache"]
    assert cache["used"] and cache["hit_rate"] == 1.0 and cache["misses"] == 0
    a, b = load_file(RunDir(straight).weights), load_file(RunDir(stopped).weights)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mixup_trains_the_head_on_images(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "mix"
    args = [*FAST, "--head-epochs", "1", "--finetune-epochs", "0", "--augment", "mixup_alpha=0.2"]
    assert main(["train", str(tiny_data), "--out", str(run), *args]) == 0
    cache = _summary(run)["phases"][0]["feature_cache"]
    assert cache["used"] is False and "MixUp" in cache["reason"]


def test_a_phase_of_zero_epochs_fills_no_cache(tiny_data: Path, tmp_path: Path,
                                               cache_dir: Path) -> None:
    run = tmp_path / "no_head"
    args = [*FAST, "--head-epochs", "0", "--finetune-epochs", "1"]
    assert main(["train", str(tiny_data), "--out", str(run), *args]) == 0
    head, finetune = _summary(run)["phases"]
    assert head["epochs_run"] == 0 and head["feature_cache"] is None
    assert head["measured_peak_bytes"] is None and finetune["epochs_run"] == 1
    assert not (cache_dir / "features").exists()
    assert RunDir(run).report_md.exists()


def test_a_second_run_with_another_out_hits_every_image(tiny_data: Path, tmp_path: Path,
                                                         cache_dir: Path) -> None:
    args = [*FAST, "--head-epochs", "1", "--finetune-epochs", "1"]
    for name in ("first", "second"):
        assert main(["train", str(tiny_data), "--out", str(tmp_path / name), *args]) == 0
    first, second = (_summary(tmp_path / n) for n in ("first", "second"))
    assert first["phases"][0]["feature_cache"]["misses"] == 36
    cache = second["phases"][0]["feature_cache"]
    assert (cache["hits"], cache["misses"], cache["hit_rate"]) == (36, 0, 1.0)
    assert Path(cache["dir"]).parent == cache_dir / "features"
    images = second["decoded_images"]  # looked at once, by the first run (32 px: too small
    assert first["decoded_images"]["added"] == 36 and images["added"] == 0  # to store: files)
    assert Path(images["path"]).parent == cache_dir / "images"
