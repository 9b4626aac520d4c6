"""Test-time augmentation: the views are what they claim, probabilities (not logits) are
averaged, and a flip-symmetric model sees each flipped view as its unflipped one."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from snugtune.data import Sample, eval_transform, load_image
from snugtune.infer import (
    VIEWS,
    TTAReport,
    average_views,
    expand_views,
    predict_samples,
    predict_views,
    view_transform,
)
from snugtune.infer.tta import ZOOM, FlipInput, flip, view_inputs, zoom_size
from snugtune.report import ClassificationReport, classification_report

SIZE = 32
PRE = {"size": SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
       "interpolation": "bilinear"}


def _random_image(seed: int, side: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _views(image: Image.Image) -> list[Tensor]:
    return [v[0] for v in expand_views(view_transform(PRE)(image)[None])]


class Toy(nn.Module):
    """A classifier of (B, 3, 32, 32) images: flatten + linear, so it sees where things are.

    ``symmetric``: the image and its mirror are added first, so the output is the same for an
    image and its left-right flip.
    """

    def __init__(self, symmetric: bool = False, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.symmetric = symmetric
        self.linear = nn.Linear(3 * SIZE * SIZE, classes)
        self.head = SimpleNamespace(num_classes=classes)  # what predict_samples reads

    def forward(self, x: Tensor) -> Tensor:
        if self.symmetric:
            x = x + x.flip(-1)
        return self.linear(x.flatten(1)) * 5.0  # confident enough that averages matter


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    root = tmp_path_factory.mktemp("tta")
    samples = []
    for i in range(5):  # odd count, batch size 2: a last batch of one
        path = root / f"img_{i}.png"
        _random_image(i, side=40 + 7 * i).save(path)
        samples.append(Sample(path=str(path), label=i % 3))
    return samples


def test_views_are_named_and_ordered() -> None:
    assert VIEWS == ("plain", "flip", "zoom", "zoom+flip")
    assert zoom_size(SIZE) == 36 and zoom_size(224) == 258 and zoom_size(4) == 6
    for size in range(14, 520):  # about 1.15x, larger by an even margin (an exactly centred crop)
        assert (zoom_size(size) - size) % 2 == 0 and zoom_size(size) > size
        assert abs(zoom_size(size) - ZOOM * size) <= 1.0 + 1e-9


def test_the_plain_view_is_the_evaluation_input() -> None:
    image = _random_image(0)
    assert torch.equal(_views(image)[0], eval_transform(PRE)(image))


def test_the_flip_views_mirror_the_image_left_right() -> None:
    image = _random_image(1)
    plain, flip, zoom, zoom_flip = _views(image)
    for a, b in ((plain, flip), (zoom, zoom_flip)):
        assert a.shape == b.shape == (3, SIZE, SIZE)
        for j in range(SIZE):  # column j is column SIZE-1-j: a flip, not a transpose or rotation
            assert torch.equal(b[:, :, j], a[:, :, SIZE - 1 - j])
        assert not torch.equal(a, b)
    # the same as preprocessing the mirrored image (resizing commutes with mirroring)
    mirrored = _views(ImageOps.mirror(image))
    assert torch.allclose(flip, mirrored[0], atol=1e-5)
    assert torch.allclose(zoom_flip, mirrored[2], atol=1e-5)


def test_the_zoom_view_is_the_evaluation_pipeline_larger_and_centre_cropped() -> None:
    image = _random_image(2)
    zoom = _views(image)[2]
    big = eval_transform({**PRE, "size": zoom_size(SIZE)})(image)  # (3, 36, 36)
    off = (zoom_size(SIZE) - SIZE) // 2
    assert torch.equal(zoom, big[:, off : off + SIZE, off : off + SIZE])
    # A frame 2% wide is in the plain view's corners and cut off in the zoomed one.
    framed = np.full((100, 100, 3), 128, dtype=np.uint8)
    framed[:2], framed[-2:], framed[:, :2], framed[:, -2:] = 255, 255, 255, 255
    plain, _, zoomed, _ = _views(Image.fromarray(framed))
    grey = eval_transform(PRE)(Image.fromarray(np.full((100, 100, 3), 128, dtype=np.uint8)))
    assert not torch.allclose(plain[:, 0, 0], grey[:, 0, 0], atol=1e-3)
    assert torch.allclose(zoomed[:, 0, 0], grey[:, 0, 0], atol=1e-3)
    assert torch.allclose(zoomed[:, -1, -1], grey[:, -1, -1], atol=1e-3)


def test_the_view_transform_travels_to_loader_workers() -> None:
    image = _random_image(3)
    tf = pickle.loads(pickle.dumps(view_transform(PRE)))
    assert torch.equal(tf(image), view_transform(PRE)(image))


def test_flipped_views_are_flipped_in_the_forward_pass_in_the_models_mode() -> None:
    x = view_transform(PRE)(_random_image(4))[None]  # (1, 2, 3, 32, 32)
    sources = view_inputs(x)
    assert [f for _, f in sources] == [False, True, False, True]
    storage = x.untyped_storage().data_ptr()
    assert all(src.untyped_storage().data_ptr() == storage for src, _ in sources)  # no copies
    model = Toy().eval()
    wrapped = FlipInput(model)
    assert not wrapped.training  # an evaluation restoring the wrapper's mode keeps model in eval
    with torch.no_grad():
        for (src, flipped), view in zip(sources, expand_views(x), strict=True):
            got = (wrapped if flipped else model)(src)
            assert torch.equal(got, model(view))
    assert torch.equal(flip(flip(x)), x)


def test_expand_views_refuses_a_plain_batch() -> None:
    with pytest.raises(ValueError, match="view_transform"):
        expand_views(torch.zeros(2, 3, SIZE, SIZE))


def test_average_views_is_the_mean_of_probabilities() -> None:
    a = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    b = torch.tensor([[0.3, 0.7], [0.4, 0.6]])
    assert torch.allclose(average_views([a, b]), torch.tensor([[0.6, 0.4], [0.3, 0.7]]))
    assert torch.equal(average_views(torch.stack([a, b])), average_views([a, b]))


def test_tta_probabilities_average_the_softmax_of_each_view(images: list[Sample]) -> None:
    model = Toy().eval()
    views, labels = predict_views(model, images, PRE, batch_size=2, workers=0)  # type: ignore[arg-type]
    assert views.shape == (len(VIEWS), len(images), 3)
    assert labels.tolist() == [s.label for s in images]
    with torch.no_grad():
        for i, s in enumerate(images):
            x = torch.stack(_views(load_image(s.path, draft_size=SIZE)))  # (4, 3, 32, 32)
            want = model(x).softmax(-1)
            assert torch.allclose(views[:, i], want, atol=1e-6)
    tta, tta_labels = predict_samples(model, images, PRE, batch_size=2, workers=0, tta=True)  # type: ignore[arg-type]
    assert torch.allclose(tta, views.mean(0), atol=1e-7)
    assert torch.allclose(tta.sum(-1), torch.ones(len(images)))
    assert torch.equal(tta_labels, labels)
    # the mean of probabilities, which is not the softmax of the mean logit
    with torch.no_grad():
        logits = torch.stack([model(torch.stack(_views(load_image(s.path, draft_size=SIZE))))
                              for s in images], 1)  # (4, N, 3)
    assert not torch.allclose(tta, logits.mean(0).softmax(-1), atol=1e-4)
    # view 0 is exactly the prediction without TTA
    plain, _ = predict_samples(model, images, PRE, batch_size=2, workers=0)  # type: ignore[arg-type]
    assert torch.equal(views[0], plain)


def test_a_flip_symmetric_model_gives_each_flipped_view_its_unflipped_result(
    images: list[Sample],
) -> None:
    model = Toy(symmetric=True).eval()
    views, _ = predict_views(model, images, PRE, batch_size=3, workers=0)  # type: ignore[arg-type]
    assert torch.allclose(views[1], views[0], atol=1e-6)
    assert torch.allclose(views[3], views[2], atol=1e-6)
    assert not torch.allclose(views[2], views[0], atol=1e-3)  # the zoom is another view
    tta, _ = predict_samples(model, images, PRE, batch_size=3, workers=0, tta=True)  # type: ignore[arg-type]
    assert torch.allclose(tta, (views[0] + views[2]) / 2, atol=1e-6)


def test_tta_does_not_change_with_a_mirrored_image_for_any_model(tmp_path: Path) -> None:
    """The views of a mirrored image are the image's views, flipped: the same set."""
    image = _random_image(7, side=45)
    image.save(tmp_path / "a.png")
    ImageOps.mirror(image).save(tmp_path / "b.png")
    samples = [Sample(path=str(tmp_path / n), label=0) for n in ("a.png", "b.png")]
    model = Toy().eval()
    plain, _ = predict_samples(model, samples, PRE, workers=0)  # type: ignore[arg-type]
    assert not torch.allclose(plain[0], plain[1], atol=1e-3)  # the model tells them apart
    tta, _ = predict_samples(model, samples, PRE, workers=0, tta=True)  # type: ignore[arg-type]
    assert torch.allclose(tta[0], tta[1], atol=1e-5)


def test_no_samples_give_empty_views() -> None:
    views, labels = predict_views(Toy().eval(), [], PRE, workers=0)  # type: ignore[arg-type]
    assert views.shape == (len(VIEWS), 0, 3) and labels.shape == (0,)


def test_tta_report_keeps_both_accuracies_and_reads_back() -> None:
    classes = ["a", "b"]
    with_tta = classification_report([0, 1, 1, 0], [0, 1, 1, 1], classes)
    plain = classification_report([0, 1, 1, 0], [1, 1, 0, 1], classes)
    report = TTAReport(accuracy=with_tta.accuracy, per_class=with_tta.per_class,
                       confusion=with_tta.confusion, classes=with_tta.classes, without_tta=plain)
    assert isinstance(report, ClassificationReport)
    assert report.accuracy == 0.75 and report.accuracy_without_tta == 0.25
    d = report.to_dict()
    assert d["accuracy"] == 0.75 and d["accuracy_without_tta"] == 0.25
    assert d["macro_f1_without_tta"] == pytest.approx(plain.macro_f1())
    assert d["tta_views"] == list(VIEWS)
    assert d["without_tta"] == plain.to_dict()
    assert TTAReport.from_dict(d) == report
