"""The candidates of --model auto: a table of sourced figures, kept to weights on this machine."""

from __future__ import annotations

import pytest

from snugtune.errors import ConfigError
from snugtune.models import resolve_backbone
from snugtune.models.candidates import ZOO, auto_entries, is_auto, weights_here


def test_every_row_names_a_backbone_with_sourced_figures() -> None:
    assert len({e.name for e in ZOO}) == len(ZOO)
    for e in ZOO:
        resolve_backbone(e.name)  # every name builds
        assert e.top1 is not None and 60 < e.top1 < 90 and e.params_m and e.resolution
        assert e.source
    lites = [e for e in ZOO if e.name.startswith("tf_efficientnet_lite")]
    assert [e.top1 for e in lites] == sorted(e.top1 for e in lites if e.top1)  # Lite0 < 1 < 2


def test_auto_keeps_the_rows_whose_weights_are_here(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_auto("auto") and is_auto("auto:vgg16") and not is_auto("autoformer")
    assert weights_here("tf_efficientnet_lite0") is not None  # the bundled package
    here = {"tf_efficientnet_lite0", "resnet18"}
    monkeypatch.setattr("snugtune.models.candidates.weights_here",
                        lambda name: "x" if name in here else None)
    kept, skipped = auto_entries("auto")
    assert {e.name for e in kept} == here
    assert {n for n, _ in skipped} == {e.name for e in ZOO} - here
    assert all(why == "no pretrained weights on this machine" for _, why in skipped)
    assert len(auto_entries("auto", weights="none")[0]) == len(ZOO)  # random weights: all


def test_a_list_is_taken_as_it_is_and_an_unknown_name_is_refused() -> None:
    kept, skipped = auto_entries("auto:vgg16,timm:test_resnet,vgg16")
    assert [e.name for e in kept] == ["vgg16", "timm:test_resnet"] and skipped == []
    assert kept[0].top1 == 71.592 and kept[1].top1 is None  # off the table: no figures
    with pytest.raises(ConfigError, match="vgg166"):
        auto_entries("auto:vgg166")


def test_nothing_to_choose_from_says_how_to_get_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("snugtune.models.candidates.weights_here", lambda name: None)
    with pytest.raises(ConfigError, match=r"snugtune\[zoo\]"):
        auto_entries("auto")
