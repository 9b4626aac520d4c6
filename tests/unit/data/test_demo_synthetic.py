"""write_animal_mnist (demo data) and make_image_folder (synthetic data)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import snugtune.data.demo as demo
from snugtune.data import ANIMAL_MNIST_CLASSES, make_image_folder, scan_folder, write_animal_mnist
from snugtune.errors import DataError


def test_write_animal_mnist_small(tmp_path: Path) -> None:
    dest = write_animal_mnist(tmp_path / "am", per_class=3, seed=0)
    files = sorted(dest.glob("*/*.png"))
    assert len(files) == 30
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == list(ANIMAL_MNIST_CLASSES)
    img = Image.open(files[0])
    assert img.size == (28, 28) and img.mode == "L"
    text = (dest / "ATTRIBUTION.txt").read_text()
    assert "animal-mnist" in text and "MIT License" in text
    result = scan_folder(dest)
    assert result.classes == ANIMAL_MNIST_CLASSES and result.skipped == ()
    assert set(result.class_counts().values()) == {3}


def test_write_animal_mnist_is_idempotent_and_follows_selection(tmp_path: Path) -> None:
    dest = write_animal_mnist(tmp_path / "am", per_class=2, seed=0)
    first = {p: p.stat().st_mtime_ns for p in dest.glob("*/*.png")}
    write_animal_mnist(dest, per_class=2, seed=0)
    assert {p: p.stat().st_mtime_ns for p in dest.glob("*/*.png")} == first
    write_animal_mnist(dest, per_class=2, seed=5)  # another choice: stale files removed
    assert len(list(dest.glob("*/*.png"))) == 20
    (dest / "cat" / sorted(os.listdir(dest / "cat"))[0]).unlink()  # incomplete: repaired
    write_animal_mnist(dest, per_class=2, seed=5)
    assert len(list((dest / "cat").glob("*.png"))) == 2


def _silhouette(mean_image: np.ndarray) -> tuple[int, int]:
    """Height and width of the brighter-than-average part of a class's mean image."""
    fg = mean_image > mean_image.mean()
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_labels_match_class_names(tmp_path: Path) -> None:
    """1,000 images per label; the names follow the labels' order: the giraffe's mean
    silhouette is the tallest and narrowest of the ten (27 x 12 px), the horse's and the
    cow's wider than tall; and each written file holds its label's image."""
    images, labels = demo.load_animal_mnist_arrays()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    shape = {c: _silhouette(images[labels == k].astype(float).mean(0))
             for k, c in enumerate(ANIMAL_MNIST_CLASSES)}
    assert max(shape, key=lambda c: shape[c][0] / shape[c][1]) == "giraffe"
    assert all(shape[c][1] > shape[c][0] for c in ("horse", "cow", "elephant"))
    dest = write_animal_mnist(tmp_path / "am", per_class=1, seed=0)
    for k, name in enumerate(ANIMAL_MNIST_CLASSES):
        (png,) = (dest / name).glob("*.png")
        i = int(png.stem)  # NNNN: the image's index within its label, in array order
        expected = images[np.flatnonzero(labels == k)[i]]
        assert np.array_equal(np.asarray(Image.open(png).convert("L")), expected)


def test_data_unpickler_refuses_code(tmp_path: Path) -> None:
    payload = pickle.dumps(os.system)  # a global other than numpy arrays
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        demo._NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    buf = io.BytesIO(gzip.compress(pickle.dumps(arr)))
    with gzip.open(buf) as f:
        assert np.array_equal(demo._NumpyOnlyUnpickler(f).load(), arr)


def test_missing_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps animal-mnist"):
        demo.load_animal_mnist_arrays()


def test_make_image_folder_structure_and_determinism(tmp_path: Path) -> None:
    a = make_image_folder(tmp_path / "a", classes=3, per_class=4, size=20, seed=1)
    b = make_image_folder(tmp_path / "b", classes=3, per_class=4, size=20, seed=1)
    names = sorted(str(p.relative_to(a)) for p in a.glob("*/*"))
    assert names[:2] == ["class_0/img_0.png", "class_0/img_1.png"] and len(names) == 12
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert Image.open(a / names[0]).size == (20, 20)


def test_make_image_folder_formats_and_many_classes(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "j", classes=12, per_class=1, size=16, fmt="jpg")
    r = scan_folder(root)
    assert r.classes[:3] == ("class_00", "class_01", "class_02") and len(r.classes) == 12
    with pytest.raises(ValueError, match="fmt"):
        make_image_folder(tmp_path / "x", fmt="svg")


def test_synthetic_classes_are_learnable_by_mean_colour(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "s", classes=4, per_class=10, size=32, seed=0)
    samples = scan_folder(root).samples

    def shape_colour(path: str) -> np.ndarray:  # mean colour of the saturated (shape) pixels
        px = np.asarray(Image.open(path), np.float64).reshape(-1, 3)
        return px[np.ptp(px, axis=1) > 80].mean(0)

    feats = np.stack([shape_colour(s.path) for s in samples])
    labels = np.array([s.label for s in samples])
    centroids = np.stack([feats[labels == c].mean(0) for c in range(4)])
    pred = np.argmin(((feats[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels).mean() >= 0.95
