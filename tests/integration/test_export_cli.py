"""End to end through the CLI: train, export in every format, predict with the ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snugtune.cli import main

from .conftest import FAST


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_cli") / "run"
    assert main(["train", str(tiny_data), "--out", str(out), *FAST, "--epochs", "1"]) == 0
    return out


def test_export_every_format_with_a_passing_check(run: Path, tmp_path: Path, capsys) -> None:
    for fmt, name in (("onnx", "model.onnx"), ("pt2", "model.pt2"),
                      ("safetensors", "model.safetensors")):
        capsys.readouterr()
        assert main(["export", str(run), "--format", fmt, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        path = run / "export" / name
        assert result["path"] == str(path) and path.is_file()
        assert result["card"] == str(path) + ".json"
        assert result["inputs"] == "validation split" and result["checked_on"] >= 1
        assert result["max_abs_diff"] <= result["tolerance"] == 1e-4
        card = json.loads(Path(result["card"]).read_text())
        assert card["classes"] == ["class_0", "class_1", "class_2"]
        assert card["preprocessing"]["size"] == 32 and card["export"]["format"] == fmt
    out = tmp_path / "deploy" / "flowers.onnx"
    assert main(["export", str(run), "-f", "onnx", "-o", str(out)]) == 0
    assert out.is_file() and (tmp_path / "deploy" / "flowers.onnx.json").is_file()
    assert "max |logit difference|" in capsys.readouterr().out


def test_predict_with_the_onnx_export_matches_the_run(run: Path, tiny_data: Path, capsys) -> None:
    model = run / "export" / "model.onnx"
    if not model.exists():
        assert main(["export", str(run), "--format", "onnx"]) == 0
    images = [str(next((tiny_data / c).iterdir())) for c in ("class_0", "class_2")]
    capsys.readouterr()
    assert main(["predict", str(model), *images, "--top-k", "3", "--json"]) == 0
    via_onnx = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), *images, "--top-k", "3", "--json"]) == 0
    via_run = json.loads(capsys.readouterr().out)
    for a, b in zip(via_onnx, via_run, strict=True):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        for ta, tb in zip(a["top"], b["top"], strict=True):
            assert ta["probability"] == pytest.approx(tb["probability"], abs=1e-5)


def test_export_errors_are_one_line(run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "no finished model" in err and err.count("\n") == 1
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"x")
    assert main(["predict", str(lone), "img.png"]) == 1
    assert "lone.onnx.json" in capsys.readouterr().err
