"""The JSON model card."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

import snugtune
from snugtune.report import read_model_card, write_model_card

PRE = {"size": 224, "mean": (0.5, 0.5, 0.5), "std": [0.5, 0.5, 0.5], "interpolation": "bilinear"}


def test_card_fields(tmp_path: Path) -> None:
    path = write_model_card(
        tmp_path / "model_card.json",
        backbone="tf_efficientnet_lite0",
        classes=["cat", "dog", "fox"],
        preprocessing=PRE,
        metrics={"best_val_accuracy": 0.93, "val_loss": float("nan")},
        extra={"weights": "model.safetensors"},
    )
    card = json.loads(path.read_text())
    assert card["format_version"] == 1
    assert card["backbone"] == "tf_efficientnet_lite0"
    assert card["num_classes"] == 3 and card["classes"] == ["cat", "dog", "fox"]
    assert card["preprocessing"] == {**PRE, "mean": [0.5, 0.5, 0.5]}
    assert card["metrics"] == {"best_val_accuracy": 0.93, "val_loss": None}
    assert card["snugtune_version"] == snugtune.__version__
    assert "torch_version" in card
    assert card["created_utc"].endswith("Z")
    assert datetime.fromisoformat(card["created_utc"].replace("Z", "+00:00")).tzinfo is not None
    assert card["weights"] == "model.safetensors"
    assert read_model_card(tmp_path) == card


def test_directory_path_and_extra_clash(tmp_path: Path) -> None:
    path = write_model_card(tmp_path, backbone="b", classes=["a"], preprocessing=PRE, metrics={})
    assert path == tmp_path / "model_card.json"
    with pytest.raises(ValueError, match="clash"):
        write_model_card(
            tmp_path,
            backbone="b",
            classes=["a"],
            preprocessing=PRE,
            metrics={},
            extra={"classes": ["x"]},
        )


def test_read_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"classes": []}')
    with pytest.raises(ValueError, match="not a snugtune model card"):
        read_model_card(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"format": "snugtune-model-card", "format_version": 99}')
    with pytest.raises(ValueError, match="Upgrade snugtune"):
        read_model_card(tmp_path / "y.json")
