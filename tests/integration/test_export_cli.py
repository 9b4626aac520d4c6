"""End to end through the CLI: train, export in every format, predict with the ONNX export,
evaluate and predict with test-time augmentation (--tta) in both paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import snugtune
from snugtune.cli import main
from snugtune.infer import VIEWS, TTAReport

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


def _onnx(run: Path) -> Path:
    model = run / "export" / "model.onnx"
    if not model.exists():
        assert main(["export", str(run), "--format", "onnx"]) == 0
    return model


def _predict_json(capsys, *args: str) -> list[dict]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _probabilities(preds: list[dict]) -> list[dict[str, float]]:
    return [{t["label"]: t["probability"] for t in p["top"]} for p in preds]


def test_evaluate_with_tta_shows_the_accuracy_with_and_without(run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "accuracy_without_tta" not in plain  # unchanged without --tta
    assert main(["evaluate", str(run), "--tta", "--json"]) == 0
    tta = json.loads(capsys.readouterr().out)
    assert tta["tta_views"] == list(VIEWS) == ["plain", "flip", "zoom", "zoom+flip"]
    assert tta["accuracy_without_tta"] == plain["accuracy"]
    assert tta["without_tta"] == plain  # the plain view is exactly the evaluation without TTA
    assert tta["num_samples"] == plain["num_samples"] >= 1 and 0.0 <= tta["accuracy"] <= 1.0
    assert main(["evaluate", str(run), "--tta"]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {tta['accuracy']:.4f}" in out
    assert f"without it: accuracy {plain['accuracy']:.4f}" in out and "zoom+flip" in out
    report = snugtune.evaluate(run, tta=True, device="cpu", workers=0)
    assert isinstance(report, TTAReport) and report.to_dict() == tta


def test_predict_with_tta_agrees_between_the_run_and_the_onnx_export(
    run: Path, tiny_data: Path, capsys
) -> None:
    model = _onnx(run)
    images = [str(sorted((tiny_data / c).iterdir())[1]) for c in ("class_0", "class_1", "class_2")]
    via_onnx = _predict_json(capsys, str(model), *images, "--top-k", "3", "--tta")
    via_run = _predict_json(capsys, str(run), *images, "--top-k", "3", "--tta")
    plain = _predict_json(capsys, str(run), *images, "--top-k", "3")
    assert [p["path"] for p in via_onnx] == [p["path"] for p in via_run] == images
    for a, b in zip(_probabilities(via_onnx), _probabilities(via_run), strict=True):
        assert a.keys() == b.keys() and sum(b.values()) == pytest.approx(1.0, abs=1e-5)
        for label in b:
            assert a[label] == pytest.approx(b[label], abs=1e-5)
    tta_p, plain_p = _probabilities(via_run), _probabilities(plain)
    assert max(abs(t[k] - p[k]) for t, p in zip(tta_p, plain_p, strict=True) for k in t) > 1e-4
    api = snugtune.predict(run, images, top_k=3, tta=True, device="cpu")
    assert [p.to_dict() for p in api] == via_run
    api_onnx = snugtune.predict(model, images, top_k=3, tta=True)
    assert [p.to_dict() for p in api_onnx] == via_onnx


def test_export_errors_are_one_line(run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert "no finished model" in err and err.count("\n") == 1
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"x")
    assert main(["predict", str(lone), "img.png"]) == 1
    assert "lone.onnx.json" in capsys.readouterr().err
