"""Export to ONNX / torch.export (.pt2) / safetensors, checked against PyTorch; ONNX predict.

The "run" here is made by hand (an untrained resnet18 with its weights, card and split over
generated images): export only needs a finished run's files, not a training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from snugtune.data import eval_transform, make_image_folder, scan_folder
from snugtune.errors import CheckpointError, ExportError
from snugtune.export import TOLERANCE, _formats, export_run
from snugtune.infer import OnnxModel, is_onnx_model, load_run, predict
from snugtune.models import build_classifier
from snugtune.recipe.outputs import save_weights
from snugtune.report import write_model_card
from snugtune.rundir import card_path_for

SIZE = 32


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: weights, model card, and a split over real image files."""
    root = tmp_path_factory.mktemp("export")
    data, run_dir = root / "data", root / "run"
    make_image_folder(data, classes=3, per_class=4, size=SIZE, seed=1)
    run_dir.mkdir()
    torch.manual_seed(0)
    model = build_classifier("torchvision:resnet18", 3, weights="none", head_dropout=0.0)
    save_weights(model, run_dir / "model.safetensors")
    pre = {**model.preprocessing.to_dict(), "size": SIZE}
    write_model_card(run_dir / "model_card.json", backbone=model.spec.qualified,
                     classes=["a", "b", "c"], preprocessing=pre, metrics={},
                     extra={"weights": "model.safetensors", "head": {"hidden": None, "dropout": 0.0},
                            "model": "torchvision:resnet18"})
    samples = scan_folder(data).samples
    split = {"train": [[s.path, s.label] for s in samples[:8]],
             "val": [[s.path, s.label] for s in samples[8:]]}
    (run_dir / "split.json").write_text(json.dumps(split))
    return run_dir


@pytest.fixture(scope="module")
def onnx_export(run: Path):  # type: ignore[no-untyped-def]
    return export_run(run, "onnx")


def _val_batch(run: Path) -> torch.Tensor:
    from snugtune.data import load_image

    card = json.loads((run / "model_card.json").read_text())
    tf = eval_transform(card["preprocessing"])
    paths = [p for p, _ in json.loads((run / "split.json").read_text())["val"]]
    return torch.stack([tf(load_image(p, draft_size=SIZE)) for p in paths])  # (4, 3, 32, 32)


def test_onnx_export_agrees_with_pytorch_in_onnxruntime_at_any_batch(run: Path, onnx_export) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    assert onnx_export.path == run / "export" / "model.onnx" and onnx_export.path.is_file()
    assert onnx_export.inputs_source == "validation split" and onnx_export.checked_on == 4
    assert onnx_export.max_abs_diff <= TOLERANCE
    model, _ = load_run(run)
    x = _val_batch(run)
    session = ort.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input" and session.get_outputs()[0].name == "logits"
    for batch in (x, x[:1], torch.cat([x, x])):  # 4, 1 and 8 images: the batch axis is dynamic
        got = session.run(None, {"input": batch.numpy()})[0]
        with torch.no_grad():
            want = model(batch).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= TOLERANCE


def test_export_card_describes_classes_preprocessing_and_file(run: Path, onnx_export) -> None:  # type: ignore[no-untyped-def]
    card = json.loads(card_path_for(onnx_export.path).read_text())
    assert card_path_for(onnx_export.path).name == "model.onnx.json"
    assert card["classes"] == ["a", "b", "c"] and card["num_classes"] == 3
    assert card["preprocessing"]["size"] == SIZE and len(card["preprocessing"]["mean"]) == 3
    ex = card["export"]
    assert ex["format"] == "onnx" and ex["file"] == "model.onnx" and ex["opset"]
    assert ex["input"] == {"name": "input", "shape": ["batch", 3, SIZE, SIZE], "dtype": "float32",
                           "layout": "NCHW"}
    assert ex["output"]["shape"] == ["batch", 3]
    assert ex["check"]["max_abs_diff"] <= ex["check"]["tolerance"] == TOLERANCE
    assert ex["sha256"] == hashlib.sha256(onnx_export.path.read_bytes()).hexdigest()
    assert "weights" not in card  # the run's weights file is not part of an ONNX export


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_pt2_and_safetensors_exports_reload_and_agree(run: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"m.{fmt}"
    result = export_run(run, fmt, out)
    assert result.path == out and out.is_file() and card_path_for(out).is_file()
    assert result.max_abs_diff <= TOLERANCE
    model, _ = load_run(run)
    x = _val_batch(run)
    with torch.no_grad():
        want = model(x)
        if fmt == "pt2":
            got = torch.export.load(str(out)).module()(x)
        else:
            from safetensors.torch import load_file

            other = build_classifier("torchvision:resnet18", 3, weights="none", head_dropout=0.0)
            other.load_state_dict(load_file(str(out)))
            got = other.eval()(x)
    assert (got - want).abs().max() <= TOLERANCE
    card = json.loads(card_path_for(out).read_text())
    assert card["export"]["format"] == fmt
    assert (card.get("weights") == out.name) == (fmt == "safetensors")


def test_a_mismatching_export_fails_and_leaves_no_file(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_formats.CHECKERS, "safetensors", lambda *a: 0.5)
    out = tmp_path / "bad.safetensors"
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0\.5"):
        export_run(run, "safetensors", out)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_an_error_naming_the_choices(run: Path) -> None:
    with pytest.raises(ExportError, match="onnx, pt2, safetensors"):
        export_run(run, "tflite")


def test_without_readable_images_the_check_uses_random_inputs(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = tmp_path / "run"
    moved.mkdir()
    for name in ("model.safetensors", "model_card.json"):
        (moved / name).write_bytes((run / name).read_bytes())
    result = export_run(moved, "pt2")
    assert result.inputs_source == "random" and result.max_abs_diff <= TOLERANCE
    assert "random inputs" in caplog.text


def test_onnx_predict_matches_the_run(run: Path, onnx_export) -> None:  # type: ignore[no-untyped-def]
    files = [p for p, _ in json.loads((run / "split.json").read_text())["val"]]
    assert is_onnx_model(onnx_export.path) and not is_onnx_model(run)
    via_onnx = predict(onnx_export.path, files, top_k=2)
    via_run = predict(run, files, top_k=2)
    for a, b in zip(via_onnx, via_run, strict=True):
        assert a.labels == b.labels
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert OnnxModel(onnx_export.path).classes == ["a", "b", "c"]


def test_onnx_model_without_its_card_is_a_clear_error(tmp_path: Path) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"not really onnx")
    with pytest.raises(CheckpointError, match=r"lone\.onnx\.json"):
        OnnxModel(lone)
