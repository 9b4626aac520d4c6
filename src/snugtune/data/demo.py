"""The demo data set: Animal-MNIST written as a class-folder tree of PNGs.

Animal-MNIST (10 animal silhouette classes x 1,000 images, 28x28 grayscale, MIT licence) ships
inside the ``animal-mnist`` package as two gzip-pickled numpy arrays. The package's modules
import TensorFlow, so it is installed with ``pip install --no-deps animal-mnist`` and only its
data files are read here: the package is located without being imported, and the pickles are
read with an unpickler that can build numpy arrays and nothing else (no code runs from them).
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from snugtune.errors import DataError

__all__ = ["ANIMAL_MNIST_CLASSES", "load_animal_mnist_arrays", "write_animal_mnist"]

log = logging.getLogger(__name__)

#: Label order of the arrays (checked by eye against the images: 0 is a bear, 9 a zebra).
ANIMAL_MNIST_CLASSES = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)  # fmt: skip
_DATA_FILE = "animal_data_version_3.gz"
_LABEL_FILE = "animal_label_version_3.gz"
_MARKER = ".snugtune-animal-mnist.json"
_NAME_RE = re.compile(r"^\d{4}\.png$")
ATTRIBUTION = """\
Animal-MNIST (written here by snugtune as PNG class folders)

Source: the `animal-mnist` Python package, version 0.4 (https://pypi.org/project/animal-mnist/),
"Animal silhouette extension to MNIST", by Sina Mohammadi (SinaSR-6).
10 classes (bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra) x 1,000
grayscale 28x28 images. File <class>/NNNN.png is image NNNN of that class in the package's
array order.

Licence: MIT License, Copyright (c) 2025 SinaSR-6.

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def _reconstruct() -> Any:
    try:
        module = importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:  # numpy 1.x
        module = importlib.import_module("numpy.core.multiarray")
    return module._reconstruct


def _package_data_dir() -> Path:
    spec = importlib.util.find_spec("animal_mnist")  # locates without importing TensorFlow
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "The demo data package is not installed; run "
            "`pip install --no-deps animal-mnist` (--no-deps: it declares TensorFlow)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def load_animal_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images (10000, 28, 28) uint8 and labels (10000,) int64 from the installed package.

    Raises:
        DataError: package missing or its files unreadable.
    """
    folder = _package_data_dir()
    try:
        with gzip.open(folder / _DATA_FILE, "rb") as f:
            images = _NumpyOnlyUnpickler(f).load()
        with gzip.open(folder / _LABEL_FILE, "rb") as f:
            labels = _NumpyOnlyUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise DataError(
            f"Cannot read Animal-MNIST from {folder} ({e}); reinstall it with "
            "`pip install --no-deps --force-reinstall animal-mnist`."
        ) from e
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(
            f"Unexpected Animal-MNIST arrays {images.shape} / {labels.shape} in {folder}"
        )
    return images, labels


def write_animal_mnist(dest: str | Path, *, per_class: int | None = None, seed: int = 0) -> Path:
    """Write Animal-MNIST as ``dest/<class>/NNNN.png`` (28x28 grayscale PNGs).

    Idempotent: when ``dest`` already holds exactly this selection (same ``per_class`` and
    ``seed``, every file present) nothing is written. Otherwise missing files are written
    (each atomically) and PNGs of a previous selection that are not part of this one are
    removed (only files named ``NNNN.png``). ``ATTRIBUTION.txt`` names the source and licence.

    Args:
        dest: output folder (created).
        per_class: images per class (a seeded random choice of the 1,000); None: all.
        seed: seeds the choice when ``per_class`` is given.

    Returns:
        ``dest`` as a Path.
    """
    dest = Path(dest)
    wanted: dict[str, Any] = {"dataset": "animal-mnist 0.4", "per_class": per_class, "seed": seed}
    marker = dest / _MARKER
    if _complete(dest, marker, wanted):
        log.info("Animal-MNIST already complete in %s", dest)
        return dest
    images, labels = load_animal_mnist_arrays()
    written = 0
    for label, name in enumerate(ANIMAL_MNIST_CLASSES):
        idx = np.flatnonzero(labels == label)  # (1000,) indices of this class, array order
        chosen = _choose(len(idx), per_class, seed, label)
        written += _write_class(dest / name, images, idx, chosen)
    (dest / "ATTRIBUTION.txt").write_text(ATTRIBUTION, encoding="utf-8")
    wanted["files"] = sorted(str(p.relative_to(dest)) for p in dest.glob("*/*.png"))
    marker.write_text(json.dumps(wanted), encoding="utf-8")
    log.info("wrote %d Animal-MNIST images to %s", written, dest)
    return dest


def _complete(dest: Path, marker: Path, wanted: dict[str, Any]) -> bool:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if {k: data.get(k) for k in wanted} != wanted or not isinstance(data.get("files"), list):
        return False
    return all((dest / f).is_file() for f in data["files"])


def _choose(n: int, per_class: int | None, seed: int, label: int) -> np.ndarray:
    if per_class is None or per_class >= n:
        return np.arange(n)
    if per_class < 1:
        raise DataError(f"per_class={per_class} must be >= 1 (or None for all {n} images)")
    rng = np.random.default_rng([seed, label])
    return np.sort(rng.choice(n, size=per_class, replace=False))


def _write_class(folder: Path, images: np.ndarray, idx: np.ndarray, chosen: np.ndarray) -> int:
    """Write chosen images of one class; remove stale ``NNNN.png`` files; count new files."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = {f"{int(j):04d}.png" for j in chosen}
    for p in folder.iterdir():
        if _NAME_RE.match(p.name) and p.name not in keep:
            p.unlink()
    written = 0
    for j in chosen:
        path = folder / f"{int(j):04d}.png"
        if path.is_file():
            continue
        tmp = folder / f".{path.name}.tmp"
        Image.fromarray(images[idx[j]]).save(tmp, format="PNG")
        os.replace(tmp, path)  # a kill mid-write never leaves a truncated NNNN.png
        written += 1
    return written
