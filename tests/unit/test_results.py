"""The typed records of a run: summary.json's keys, and lenient reading of older layouts."""

from __future__ import annotations

import json

from snugtune.results import CacheInfo, PhaseResult, Recovery, RunSummary


def test_a_summary_round_trips_through_json_with_the_keys_it_always_had() -> None:
    phase = PhaseResult(name="finetune", trainable="top:2", epochs_planned=5, epochs_run=3,
                        recoveries=(Recovery(2, 7, 16, 8),), checkpointing=(3,),
                        feature_cache=CacheInfo(used=False, reason="turned off"))
    summary = RunSummary(backbone="timm:x", data="d", classes=("a", "b"), num_train=8, num_val=2,
                         resolution=96, device="cpu", best_val_accuracy=0.5, phases=(phase,))
    data = json.loads(json.dumps(summary.to_dict()))
    p = data["phases"][0]
    assert p["oom_recoveries"] == 1 and p["recoveries"] == [{"epoch": 2, "step": 7, "from": 16, "to": 8}]
    assert p["feature_cache"] == {"used": False, "reason": "turned off"}
    assert RunSummary.from_dict(data) == summary


def test_missing_and_junk_values_read_as_not_recorded() -> None:
    s = RunSummary.from_dict({"phases": "junk", "classes": 3, "unknown": 1})
    assert s.phases == () and s.classes == () and s.best_val_accuracy is None
    s = RunSummary.from_dict({"phases": [{"phase": "head"}, {}, "x"]})
    assert [p.name for p in s.phases] == ["head", ""] and s.phases[0].epochs_run is None
