"""build_transforms (Keras names -> v2) and batch_mixer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from snugtune.config import AugmentConfig
from snugtune.data import batch_mixer, build_transforms
from snugtune.data.augment import _base_grid
from snugtune.errors import ConfigError

SIZE = 32
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
OFF = AugmentConfig(
    rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, zoom_range=0.0,
    horizontal_flip=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """Asymmetric test image: gradient plus a bright block off-centre."""
    y, x = np.mgrid[0:40, 0:48]
    arr = np.stack([x * 5, y * 6, (x + y) * 2], axis=-1).clip(10, 255).astype(np.uint8)
    arr[5:15, 30:44] = 255  # no pure-black pixel: black in an output comes from fill
    return Image.fromarray(arr)


def _run(aug: AugmentConfig, img: Image.Image, seed: int, train: bool = True) -> torch.Tensor:
    t = build_transforms(aug, size=SIZE, mean=MEAN, std=STD, train=train)
    torch.manual_seed(seed)
    return t(img)


def test_eval_output_shape_dtype_values(image) -> None:
    out = _run(AugmentConfig(), image, 0, train=False)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    assert type(out) is torch.Tensor  # plain tensor, not a tv_tensors.Image
    solid = Image.new("RGB", (50, 20), (255, 0, 51))
    out = _run(AugmentConfig(), solid, 0, train=False)
    expected = torch.tensor([(1 - 0.5) / 0.5, (0 - 0.5) / 0.5, (0.2 - 0.5) / 0.5])
    assert torch.allclose(out[:, 10, 10], expected, atol=1e-6)  # square, not cropped


def test_eval_ignores_augmentation_and_is_deterministic(image) -> None:
    aug = AugmentConfig(rotation_range=40, random_erasing=0.9, color_jitter=0.5)
    assert torch.equal(_run(aug, image, 0, train=False), _run(OFF, image, 1, train=False))


def test_train_default_shape_and_seeded_determinism(image) -> None:
    aug = AugmentConfig(shear_range=10, color_jitter=0.3, random_erasing=0.5)
    a, b = _run(aug, image, 7), _run(aug, image, 7)
    assert a.shape == (3, SIZE, SIZE) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, _run(aug, image, 8))


def test_all_off_train_equals_eval(image) -> None:
    assert torch.equal(_run(OFF, image, 0), _run(OFF, image, 0, train=False))


@pytest.mark.parametrize(
    "change",
    [
        {"rotation_range": 30.0},
        {"width_shift_range": 0.2},
        {"height_shift_range": 0.2},
        {"shear_range": 20.0},
        {"zoom_range": 0.3},
        {"horizontal_flip": True},
        {"vertical_flip": True},
        {"brightness_range": (0.5, 1.5)},
        {"color_jitter": 0.5},
        {"random_erasing": 0.9},
    ],
)
def test_each_keras_option_changes_the_output(image, change) -> None:
    base = _run(OFF, image, 0, train=False)
    aug = replace(OFF, **change)
    assert any(not torch.equal(_run(aug, image, s), base) for s in range(4)), change


def test_fill_modes_differ_and_cval_is_used(image) -> None:
    outs = {
        m: _run(replace(OFF, rotation_range=30.0, zoom_range=0.4, fill_mode=m), image, 3)
        for m in ("constant", "nearest", "reflect", "wrap")
    }
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.equal(outs[a], outs[b]), (a, b)
    white = _run(replace(OFF, rotation_range=30.0, zoom_range=0.4, cval=255.0), image, 3)
    assert white.max() == pytest.approx(1.0) and not torch.equal(white, outs["constant"])


def test_wrap_shift_is_a_circular_roll(image) -> None:
    """With nearest sampling, a shift under fill_mode='wrap' is exactly a circular roll."""
    kw = {"size": SIZE, "mean": MEAN, "std": STD, "interpolation": "nearest"}
    base = build_transforms(OFF, train=False, **kw)(image)
    aug = replace(OFF, width_shift_range=0.2, height_shift_range=0.2, fill_mode="wrap")
    shifted = build_transforms(aug, train=True, **kw)
    for seed in range(3):
        torch.manual_seed(seed)
        out = shifted(image)
        best = min(
            (out - torch.roll(base, (dy, dx), dims=(1, 2))).abs().max().item()
            for dy in range(-7, 8)
            for dx in range(-7, 8)
        )
        assert best < 1e-6


def test_pure_shift_moves_content_by_the_drawn_fraction(image) -> None:
    """Keras semantics: width_shift_range is a fraction of the side (here up to 6 px)."""
    kw = {"size": SIZE, "mean": MEAN, "std": STD, "interpolation": "nearest"}
    base = build_transforms(OFF, train=False, **kw)(image)
    shifted = build_transforms(replace(OFF, width_shift_range=0.2, fill_mode="wrap"), train=True, **kw)
    rolls = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = shifted(image)
        dx = next(d for d in range(-SIZE // 2, SIZE // 2) if torch.equal(out, torch.roll(base, d, dims=2)))
        rolls.add(dx)
    assert max(abs(d) for d in rolls) <= round(0.2 * SIZE) and len(rolls) > 3


def test_nearest_fill_has_no_black_border(image) -> None:
    aug = replace(OFF, rotation_range=45.0, zoom_range=0.5, fill_mode="nearest")
    black = (torch.tensor([0.0, 0.0, 0.0]) - 0.5) / 0.5
    for s in range(3):
        out = _run(aug, image, s)
        is_black = (out == black.view(3, 1, 1)).all(dim=0)
        assert not is_black.any()  # the source image has no pure-black pixel


def test_interpolation_choice(image) -> None:
    for interp in ("bicubic", "nearest"):
        t = build_transforms(OFF, size=SIZE, mean=MEAN, std=STD, train=True, interpolation=interp)
        assert t(image).shape == (3, SIZE, SIZE)
    with pytest.raises(ConfigError, match="interpolation"):
        build_transforms(OFF, size=SIZE, mean=MEAN, std=STD, train=False, interpolation="lanczos")


def test_transforms_pickle_for_worker_processes(image) -> None:
    import pickle

    aug = AugmentConfig(fill_mode="wrap", brightness_range=(0.8, 1.2), random_erasing=0.2)
    t = pickle.loads(pickle.dumps(build_transforms(aug, size=SIZE, mean=MEAN, std=STD, train=True)))
    assert t(image).shape == (3, SIZE, SIZE)


def test_mixer_off_mixup_cutmix_both() -> None:
    assert batch_mixer(AugmentConfig(), 5) is None
    images = torch.randn(8, 3, 16, 16)
    labels = torch.arange(8) % 5
    for aug in (
        AugmentConfig(mixup_alpha=0.4),
        AugmentConfig(cutmix_alpha=1.0),
        AugmentConfig(mixup_alpha=0.4, cutmix_alpha=1.0),
    ):
        mix = batch_mixer(aug, 5)
        assert mix is not None
        torch.manual_seed(0)
        x, y = mix(images, labels)
        torch.manual_seed(0)
        x2, y2 = mix(images, labels)
        assert x.shape == images.shape and y.shape == (8, 5) and y.dtype == torch.float32
        assert type(x) is torch.Tensor and type(y) is torch.Tensor
        assert torch.allclose(y.sum(1), torch.ones(8))
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert not torch.equal(x, images)


def test_bicubic_backbones_still_augment() -> None:
    """timm backbones ask for bicubic; tensor affine only has nearest/bilinear."""
    from PIL import Image

    from snugtune.config import AugmentConfig
    from snugtune.data import build_transforms

    tf = build_transforms(AugmentConfig(), size=48, mean=[0.5] * 3, std=[0.5] * 3, train=True,
                          interpolation="bicubic")
    assert tf(Image.new("RGB", (28, 28))).shape == (3, 48, 48)


@pytest.mark.parametrize("side", [7, 32, 96])
def test_cached_grid_is_affine_grids(side: int) -> None:
    """The warp's cached pixel-centre grid times theta is ``affine_grid``'s grid."""
    theta = torch.tensor([[[1.1, 0.2, 0.05], [-0.1, 0.9, 0.02]]])
    want = torch.nn.functional.affine_grid(theta, [1, 3, side, side], align_corners=False)
    got = (_base_grid(side) @ theta[0].T).view(1, side, side, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
