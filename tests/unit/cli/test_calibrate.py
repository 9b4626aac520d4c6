"""``snugtune calibrate``: the card's measured profile, saved for later offline plans."""

from __future__ import annotations

import json

import pytest

from snugtune.cli import main
from snugtune.cli.commands import _profile_name
from snugtune.memory import get_gpu_profile, gpus
from snugtune.units import GIB, MIB


def test_calibrate_saves_a_profile_that_plans_use_by_name(fake_card, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(gpus.CALIBRATION_DIR_ENV, str(tmp_path))
    assert main(["calibrate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "rtx3070-8gb" and out["device"]["context_bytes"] == 280 * MIB
    profile = get_gpu_profile("rtx3070-8gb")
    assert profile.context_bytes == 280 * MIB and profile.memory_bytes == 8 * GIB
    assert main(["calibrate", "--name", "colab-t4"]) == 0
    assert "--gpu colab-t4" in capsys.readouterr().out
    assert (tmp_path / "colab-t4.json").is_file()


@pytest.mark.parametrize(("name", "gib", "expected"), [
    ("NVIDIA GeForce RTX 3060", 11.76, "rtx3060-12gb"),
    ("Tesla T4", 14.56, "t4-16gb"),
    ("NVIDIA A100-SXM4-40GB", 39.39, "a100-40gb"),
    ("NVIDIA GeForce GTX 1650", 3.81, "gtx1650-4gb"),
])
def test_profile_names_follow_the_cards_label(name, gib, expected):
    assert _profile_name(name, int(gib * GIB)) == expected


def test_calibrate_without_cuda_says_so(monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["calibrate"]) != 0
    assert "no CUDA device" in capsys.readouterr().err
