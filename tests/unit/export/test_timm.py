"""``--format timm``: a folder timm loads by ``local-dir:``, its config, weights, README, the
preprocessing mapping, and the one refusal for models timm cannot express.

The runs here are made by hand (a timm test_efficientnet with random weights, random
BatchNorm statistics included, its card and a split over generated images): export only needs a
finished run's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from snugtune.cli import main
from snugtune.data import eval_transform, load_image, make_image_folder, scan_folder
from snugtune.errors import ExportError
from snugtune.export import TOLERANCE, export_run
from snugtune.export._readme import hub_readme
from snugtune.export._timm import data_config, load_folder, timm_model, write_folder
from snugtune.infer import load_run
from snugtune.models import Classifier, build_classifier
from snugtune.recipe.outputs import save_weights
from snugtune.report import write_model_card
from snugtune.results import PhaseResult, RunSummary
from snugtune.rundir import RunDir

SIZE = 32
CLASSES = ["cat", "dog", "fox"]
WORKING = "onnx, pt2 or safetensors"


def _randomise(model: nn.Module, seed: int = 0) -> None:
    """Random weights and BatchNorm statistics, so a tensor under a wrong key shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)


def _make_run(root: Path, name: str, *, head_hidden: int | None = None,
              pretrained: str = "none", interpolation: str | None = None) -> Path:
    data, run_dir = root / "data", root / "run"
    if not data.exists():
        make_image_folder(data, classes=3, per_class=4, size=SIZE, seed=1)
    run_dir.mkdir()
    model = build_classifier(name, 3, weights="none", head_hidden=head_hidden, head_dropout=0.0)
    _randomise(model)
    save_weights(model, run_dir / "model.safetensors")
    pre = {**model.preprocessing.to_dict(), "size": SIZE}
    if interpolation:
        pre["interpolation"] = interpolation
    write_model_card(run_dir / "model_card.json", backbone=model.spec.qualified, classes=CLASSES,
                     preprocessing=pre, metrics={"best_val_accuracy": 0.75},
                     extra={"weights": "model.safetensors", "pretrained": pretrained,
                            "head": {"hidden": head_hidden, "dropout": 0.0}, "model": name,
                            "pre_logits": False})
    samples = scan_folder(data).samples
    split = {"train": [[s.path, s.label] for s in samples[:8]],
             "val": [[s.path, s.label] for s in samples[8:]]}
    (run_dir / "split.json").write_text(json.dumps(split))
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished test_efficientnet run, with a summary and a plan that trained under 4 GiB."""
    run_dir = _make_run(tmp_path_factory.mktemp("timm"), "timm:test_efficientnet")
    phase = PhaseResult(name="head", trainable="head", epochs_planned=2, epochs_run=2,
                        micro_batch=4, accumulation=2, precision="fp32",
                        predicted_peak_bytes=3 << 20, measured_peak_bytes=2 << 20)
    summary = RunSummary(backbone="timm:test_efficientnet", data="/data/pets",
                         classes=tuple(CLASSES), num_train=8, num_val=4, resolution=SIZE,
                         device="cuda", best_val_accuracy=0.75, best_val_loss=0.61,
                         phases=(phase,))
    (run_dir / "summary.json").write_text(json.dumps(summary.to_dict()))
    plan = {"gpu": "rtx2070-8gb", "budget_bytes": 4 << 30, "phases": [
        {"phase": "head", "trainable": "head", "precision": "fp32", "checkpointing": [1, 2],
         "channels_last": True, "feature_cache": False, "predicted_peak_bytes": 3 << 20,
         "limited_by": "budget"}]}
    (run_dir / "plan.json").write_text(json.dumps(plan))
    return run_dir


@pytest.fixture(scope="module")
def exported(run: Path):  # type: ignore[no-untyped-def]
    return export_run(run, "timm")


def _val_paths(run: Path) -> list[str]:
    return [p for p, _ in json.loads((run / "split.json").read_text())["val"]]


def _val_batch(run: Path) -> torch.Tensor:
    _, card = load_run(run)
    tf = eval_transform(card["preprocessing"])
    return torch.stack([tf(load_image(p, draft_size=SIZE)) for p in _val_paths(run)])


def test_the_folder_loads_in_timm_with_the_runs_logits(run: Path, exported) -> None:  # type: ignore[no-untyped-def]
    folder = run / "export" / "timm"
    assert exported.path == folder and exported.card_path == folder / "README.md"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors"]
    assert exported.inputs_source == "validation split" and exported.checked_on == 4
    assert exported.max_abs_diff <= TOLERANCE
    model, _ = load_run(run)
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = _val_batch(run)
    with torch.no_grad():
        want = model(x)
        assert want.abs().max() > 0.1  # random weights: a key mapped wrongly would show
        for batch in (x, x[:1]):
            assert (loaded(batch) - model(batch)).abs().max() <= TOLERANCE


def test_weights_are_under_timms_keys_and_load_strictly(run: Path, exported) -> None:  # type: ignore[no-untyped-def]
    state = load_file(str(exported.path / "model.safetensors"))
    fresh = timm.create_model("test_efficientnet", num_classes=3)
    assert set(state) == set(fresh.state_dict())
    fresh.load_state_dict(state, strict=True)
    model, _ = load_run(run)
    linear = model.head.layers[-1]
    assert torch.equal(state["classifier.weight"], linear.weight)
    assert torch.equal(state["classifier.bias"], linear.bias)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(state[key], value), key


def test_config_has_the_classes_and_the_runs_preprocessing(run: Path, exported) -> None:  # type: ignore[no-untyped-def]
    config = json.loads((exported.path / "config.json").read_text())
    _, card = load_run(run)
    pre = card["preprocessing"]
    assert config["architecture"] == "test_efficientnet" and config["num_classes"] == 3
    assert config["label_names"] == CLASSES and config["num_features"] == 256
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, SIZE, SIZE] and cfg["num_classes"] == 3
    assert cfg["mean"] == pre["mean"] and cfg["std"] == pre["std"]
    assert cfg["interpolation"] == pre["interpolation"] == "bicubic"
    assert cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "squash"
    assert "tag" not in cfg and "license" not in cfg  # random weights: no upstream checkpoint
    loaded = load_folder(exported.path)
    assert loaded.pretrained_cfg["label_names"] == CLASSES
    resolved = timm.data.resolve_data_config(model=loaded)
    assert resolved["input_size"] == (3, SIZE, SIZE) and resolved["crop_mode"] == "squash"


def test_timms_transform_gives_snugtunes_inputs(run: Path, exported) -> None:  # type: ignore[no-untyped-def]
    loaded = load_folder(exported.path)
    tf = timm.data.create_transform(**timm.data.resolve_data_config(model=loaded))
    x = _val_batch(run)
    y = torch.stack([tf(Image.open(p).convert("RGB")) for p in _val_paths(run)])
    assert torch.allclose(x, y, atol=1e-6)  # images of the model's size: the very same inputs


@pytest.mark.parametrize(("interpolation", "levels"), [("bilinear", 1), ("bicubic", 12)])
def test_resized_images_agree_within_what_pil_allows(tmp_path: Path, interpolation: str,
                                                     levels: int) -> None:
    pre = {"size": SIZE, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
           "interpolation": interpolation}
    ours = eval_transform(pre)
    theirs = timm.data.create_transform(**timm.data.resolve_data_config(
        pretrained_cfg=data_config(pre)))
    rng = np.random.default_rng(0)
    std = torch.tensor(pre["std"]).view(3, 1, 1)
    for w, h in ((48, 40), (100, 70), (20, 57), (32, 32)):
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        diff = (ours(load_image(path, draft_size=SIZE)) - theirs(Image.open(path).convert("RGB")))
        worst = float((diff.abs() * std * 255).max())  # in levels of 255
        assert worst <= (levels + 1e-3 if (w, h) != (SIZE, SIZE) else 1e-3), (w, h, worst)


def test_readme_is_a_hub_model_card(run: Path, exported) -> None:  # type: ignore[no-untyped-def]
    text = exported.card_path.read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "timm" and meta["pipeline_tag"] == "image-classification"
    assert {"timm", "image-classification", "snugtune"} <= set(meta["tags"])
    assert "license" not in meta and "base_model" not in meta
    assert body.startswith("\n# test_efficientnet fine-tuned on 3 classes")
    for needle in ("| 0 | cat |", "| 2 | fox |", "75.00%", "the folder pets", "3.00 MiB",
                   f'timm.create_model("local-dir:{exported.path}", pretrained=True)',
                   "resolve_data_config", "4.00 GiB", "rtx2070-8gb", "1, 2", "## Memory",
                   "Resize the whole image to 32 x 32 (bicubic", "## Export check",
                   "4 images of the run's validation split"):
        assert needle in body, needle


def test_license_and_base_model_only_for_timms_own_weights(run: Path, tmp_path: Path) -> None:
    model, card = load_run(run)
    net = timm_model(model, _val_batch(run), tolerance=TOLERANCE)
    info = write_folder(net, tmp_path, {**card, "pretrained": "timm-hub"})
    assert info["license"] == "apache-2.0"
    assert info["base_model"] == "timm/test_efficientnet.r160_in1k"
    assert json.loads((tmp_path / "config.json").read_text())["pretrained_cfg"]["license"] == \
        "apache-2.0"
    check = {"max_abs_diff": 0.0, "tolerance": TOLERANCE, "checked_on": 4,
             "inputs": "validation split"}
    meta = yaml.safe_load(hub_readme(card, RunDir(run), tmp_path, info, check).split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["base_model"] == info["base_model"]
    package = write_folder(net, tmp_path, {**card, "pretrained": "package:efficientnet-lite0.pth"})
    assert package["license"] is None and package["base_model"] is None


def test_export_to_a_folder_of_ones_choosing_and_again(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "hub" / "pets"
    for _ in range(2):  # the second export replaces the first's files
        result = export_run(run, "timm", out)
        assert result.path == out and result.max_abs_diff <= TOLERANCE
        assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                         "model.safetensors"]
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(ExportError, match="writes a folder"):
        export_run(run, "timm", afile)


def test_the_default_backbone_maps_onto_timms_tf_efficientnet_lite0() -> None:
    model = build_classifier("tf_efficientnet_lite0", 3)  # the package's ImageNet weights
    assert model.weights.source.startswith("package:")
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    net = timm_model(model, x, tolerance=TOLERANCE)
    assert net.pretrained_cfg["architecture"] == "tf_efficientnet_lite0"
    with torch.no_grad():
        assert (net(x) - model(x)).abs().max() <= TOLERANCE


def _refused(model: Classifier) -> str:
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ExportError) as info:
        timm_model(model.eval(), x, tolerance=TOLERANCE)
    message = str(info.value)
    assert message.startswith("--format timm: ") and "\n" not in message
    assert WORKING in message
    return message


@pytest.mark.parametrize(("name", "hidden", "says"), [
    ("torchvision:resnet18", None, "torchvision:resnet18 is a torchvision backbone"),
    ("timm:test_resnet", 8, "hidden layer (8 units, --head-hidden)"),
])
def test_runs_timm_cannot_express_are_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, hidden: int | None, says: str
) -> None:
    run_dir = _make_run(tmp_path, name, head_hidden=hidden)
    with pytest.raises(ExportError, match=WORKING) as info:
        export_run(run_dir, "timm")
    assert says in str(info.value)
    assert not (run_dir / "export" / "timm").exists()
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "timm"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and WORKING in err


def test_dropped_pre_logits_are_refused() -> None:
    vgg = build_classifier("timm:vgg11", 3, weights="none", device="meta")  # no memory used
    assert "pre-logits layers (pre_logits.fc1.weight" in _refused(vgg)


def test_any_other_difference_is_the_same_refusal() -> None:
    model = build_classifier("timm:test_resnet", 3, weights="none")
    model.backbone.layer4 = nn.Identity()  # the state lacks layers timm's test_resnet has
    assert "timm's test_resnet and the run's model differ (only timm's: layer4." in _refused(model)
    model = build_classifier("timm:test_resnet", 3, weights="none")
    _randomise(model)
    model.backbone.layer1[0].act1 = nn.Tanh()  # same keys, another forward
    assert "computes other logits" in _refused(model)
