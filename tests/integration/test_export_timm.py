"""End to end: train a tiny timm-backbone run, ``snugtune export RUN --format timm``, then load the
folder in a fresh Python process with timm alone (``local-dir:``, the transform from the model's
own pretrained config) and classify: the same classes and probabilities as ``snugtune predict``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from snugtune.cli import main

from .conftest import FAST

# What a timm user runs: nothing of snugtune is imported.
TIMM_USER = """
import json, sys
import timm, torch
from PIL import Image, ImageOps
folder, paths = sys.argv[1], sys.argv[2:]
model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
config = timm.data.resolve_data_config(model=model)
transform = timm.data.create_transform(**config)
x = torch.stack([transform(ImageOps.exif_transpose(Image.open(p)).convert("RGB")) for p in paths])
with torch.no_grad():
    probs = model(x).softmax(-1)
print(json.dumps({"labels": model.pretrained_cfg["label_names"], "probs": probs.tolist(),
                  "config": config, "snugtune": any(m.startswith("snugtune") for m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export_timm") / "run"
    assert main(["train", str(tiny_data), "--out", str(out), *FAST, "--epochs", "1"]) == 0
    return out


def _timm_user(folder: Path, images: list[str]) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, "-c", TIMM_USER, str(folder), *images],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _predict(run: Path, images: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict]:  # type: ignore[type-arg]
    capsys.readouterr()
    assert main(["predict", str(run), *images, "--top-k", "3", "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _resized(tiny_data: Path, out: Path) -> list[str]:
    """Images of other sizes than the run's 32 px, so the resize does something."""
    out.mkdir()
    paths = []
    for i, (cls, size) in enumerate((("class_0", (48, 40)), ("class_1", (57, 20)),
                                     ("class_2", (64, 64)))):
        src = sorted((tiny_data / cls).iterdir())[2]
        path = out / f"{cls}_{size[0]}x{size[1]}_{i}.png"
        Image.open(src).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(path)
        paths.append(str(path))
    return paths


def test_timm_loads_the_export_and_classifies_as_snugtune_predict(
    run: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["export", str(run), "--format", "timm", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    folder = run / "export" / "timm"
    assert result["path"] == str(folder) and result["card"] == str(folder / "README.md")
    assert result["inputs"] == "validation split" and result["max_abs_diff"] <= 1e-4
    config = json.loads((folder / "config.json").read_text())
    card = json.loads((run / "model_card.json").read_text())
    assert config["label_names"] == card["classes"] == ["class_0", "class_1", "class_2"]
    assert config["architecture"] == "test_resnet"
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: timm\n")

    native = [str(sorted((tiny_data / c).iterdir())[i]) for c in ("class_0", "class_1", "class_2")
              for i in (0, 1)]  # 32 px: the run's size, no resize
    resized = _resized(tiny_data, tmp_path / "resized")
    timm_side = _timm_user(folder, native + resized)
    assert not timm_side["snugtune"]
    assert timm_side["labels"] == card["classes"]
    assert timm_side["config"]["input_size"] == [3, 32, 32]
    assert timm_side["config"]["crop_mode"] == "squash" and timm_side["config"]["crop_pct"] == 1.0
    ours = _predict(run, native + resized, capsys)
    # Same pixels in (images of the run's size): fp32 noise only (3e-8 here). Resized images: PIL's
    # bilinear (timm) and torchvision's on 8-bit tensors (snugtune) round apart by one level of
    # 255 at most (1.1e-5 in probability here), well inside 1e-4.
    for pred, probs in zip(ours, timm_side["probs"], strict=True):
        theirs = {label: p for label, p in zip(timm_side["labels"], probs, strict=True)}
        assert pred["top"][0]["label"] == max(theirs, key=lambda k: theirs[k]), pred["path"]
        for top in pred["top"]:
            assert top["probability"] == pytest.approx(theirs[top["label"]], abs=1e-4), pred["path"]
