"""The learning-rate range test: its suggestions, and the command on a tiny folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from snugtune.cli import main
from snugtune.data import make_image_folder
from snugtune.recipe.lr_range import _suggest


def test_suggestions_on_a_textbook_curve():
    lrs = list(np.logspace(-7, 1, 81))
    # flat, then falling fastest around 1e-3, lowest at 1e-1, then diverging
    x = np.log10(lrs)
    losses = list(2.0 - 1.0 / (1 + np.exp(-3 * (x + 3))) + np.where(x > -1, (x + 1) ** 2, 0.0))
    steep, tenth = _suggest(lrs, losses)
    assert 3e-4 < steep < 3e-3
    assert 3e-3 < tenth < 3e-2  # a tenth of the minimum's learning rate (~1e-1)


def test_lr_find_command_plots_and_suggests(tmp_path: Path, capsys):
    data = make_image_folder(tmp_path / "data", classes=2, per_class=12, size=32, seed=0)
    plot = tmp_path / "lr.png"
    code = main(["lr-find", str(data), "--model", "timm:test_resnet", "--weights", "none",
                 "--res", "32", "--batch-size", "8", "--workers", "0", "--steps", "12",
                 "--plot", str(plot), "--json"])
    assert code == 0 and plot.stat().st_size > 0
    out = json.loads(capsys.readouterr().out)
    assert out["phase"] == "head" and 3 <= len(out["lrs"]) <= 12
    assert out["lrs"] == sorted(out["lrs"]) and out["lrs"][0] == 1e-7
    assert min(out["lrs"]) <= out["steep"] <= max(out["lrs"])
    assert main(["lr-find", str(data), "--steps", "2"]) == 2


def test_lr_find_needs_one_backbone_not_auto(tmp_path: Path, capsys) -> None:
    assert main(["lr-find", str(tmp_path), "--model", "auto"]) == 2
    assert "lr-find trains one backbone" in capsys.readouterr().err
