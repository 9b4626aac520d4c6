"""``--model auto``: the backbone race end to end, its record, and resume during and after it.

Three tiny timm test models with random weights (``--weights none``) race on the generated
folder; every run forces the resolution (32 px) and few epochs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from snugtune.cli import main
from snugtune.errors import WeightsError
from snugtune.rundir import RunDir

CANDIDATES = "auto:timm:test_resnet,timm:test_efficientnet,timm:test_vit"
FLAGS = ["--weights", "none", "--res", "32", "--batch-size", "8", "--workers", "0",
         "--no-progress", "--device", "cpu", "--head-epochs", "2", "--finetune-epochs", "1"]


@pytest.fixture(autouse=True)
def short_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """20 head steps a rung instead of 300: the bookkeeping is what is tested here."""
    monkeypatch.setattr("snugtune.recipe.race.RACE_STEPS", 20)


def _train(data: Path, run: Path, model: str = CANDIDATES, *extra: str) -> int:
    return main(["train", str(data), "--out", str(run), "--model", model, *FLAGS, *extra])


def test_the_race_chooses_records_and_reports_the_backbone(tiny_data: Path, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert _train(tiny_data, run.path) == 0
    race = json.loads(run.race.read_text())
    entrants = {e["name"]: e for e in race["entrants"]}
    assert set(entrants) == set(CANDIDATES.partition(":")[2].split(","))
    # successive halving: three race on the first rung, the better two on the second
    assert sorted(len(e["rungs"]) for e in entrants.values()) == [1, 2, 2]
    winner = entrants[race["winner"]]
    assert len(winner["rungs"]) == 2 and winner["images_per_s"] > 0 and race["reason"]
    summary = json.loads(run.summary.read_text())
    assert summary["race"]["winner"] == race["winner"]
    assert summary["backbone"] == f"timm:{race['winner'].partition(':')[2]}"
    assert json.loads(run.card.read_text())["model"] == race["winner"]  # evaluate/predict load it
    report = run.report_md.read_text()
    assert "## Backbone race" in report and f"Chosen: {race['winner']}, " in report
    assert main(["evaluate", str(run.path)]) == 0


def test_a_candidate_without_weights_is_dropped_with_the_reason(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snugtune.recipe.race as race_module

    build = race_module.build_classifier

    def no_weights_for_vit(name: str, *a: Any, **k: Any) -> Any:
        if name == "timm:test_vit":
            raise WeightsError("no pretrained weights for timm:test_vit (offline)")
        return build(name, *a, **k)

    monkeypatch.setattr(race_module, "build_classifier", no_weights_for_vit)
    run = RunDir(tmp_path / "run")
    assert _train(tiny_data, run.path, "auto:timm:test_vit,timm:test_resnet") == 0
    race = json.loads(run.race.read_text())
    vit = next(e for e in race["entrants"] if e["name"] == "timm:test_vit")
    assert vit["dropped"].startswith("no pretrained weights") and vit["rungs"] == []
    assert race["winner"] == "timm:test_resnet"
    assert race["reason"] == "the only candidate that can train here"


def _crash(monkeypatch: pytest.MonkeyPatch, target: Any, attr: str, at: int) -> None:
    original, calls = getattr(target, attr), [0]

    def crashing(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            raise RuntimeError("simulated crash")
        return original(*a, **k)

    monkeypatch.setattr(target, attr, crashing)


def test_resume_after_the_race_keeps_its_winner_without_racing_again(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snugtune.recipe.finetune as recipe
    import snugtune.recipe.race as race_module

    run = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        _crash(m, recipe, "run_epoch", 2)  # the head phase's second epoch
        with pytest.raises(RuntimeError, match="simulated crash"):
            main(["--debug", "train", str(tiny_data), "--out", str(run.path), "--model",
                  CANDIDATES, *FLAGS])
    chosen = json.loads(run.race.read_text())["winner"]
    assert (run.checkpoints / "last.pt").exists()
    monkeypatch.setattr(race_module, "run_race", lambda *a, **k: pytest.fail("raced again"))
    assert main(["train", "--resume", str(run.path)]) == 0
    assert json.loads(run.summary.read_text())["race"]["winner"] == chosen
    assert json.loads(run.card.read_text())["model"] == chosen


def test_resume_after_a_crash_in_the_race_races_again(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import snugtune.recipe.race as race_module

    run = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        _crash(m, race_module, "_score", 2)  # the second candidate's first rung
        with pytest.raises(RuntimeError, match="simulated crash"):
            main(["--debug", "train", str(tiny_data), "--out", str(run.path), "--model",
                  CANDIDATES, *FLAGS])
    assert not run.race.exists() and not (run.checkpoints / "last.pt").exists()
    assert main(["train", "--resume", str(run.path)]) == 0  # no checkpoint: from the start
    assert json.loads(run.summary.read_text())["race"]["winner"] in CANDIDATES


def test_plan_auto_drops_what_cannot_fit_the_budget_and_says_why(
    tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planned offline for a 4 GB GTX 1650 under 200 MiB: EfficientNet-Lite0 fits (freezing
    more than asked), ResNet-50's weights and context alone do not."""
    assert main(["plan", str(tiny_data), "--model", "auto:tf_efficientnet_lite0,resnet50",
                 "--weights", "none", "--gpu", "gtx1650-4gb", "--gpu-memory", "200MiB",
                 "--json"]) == 0
    entrants = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    lite, resnet = entrants["tf_efficientnet_lite0"], entrants["resnet50"]
    assert lite["dropped"] is None and lite["predicted_peak_bytes"] <= 200 * 2**20
    assert resnet["dropped"].startswith("does not fit: Budget 0.2 GiB < 0.3 GiB needed")
