"""Image folders in, augmented tensor batches out.

::

    scan_folder(root)            -> ScanResult (classes, samples, skipped/converted files)
    split_samples(samples, f, s) -> (train, val), stratified and seeded
    build_transforms(aug, ...)   -> PIL image -> normalised tensor (Keras names -> v2)
    ImageDataset + make_loader   -> DataLoader of (images (B, 3, H, W), labels (B,))
    batch_mixer(aug, C)          -> MixUp/CutMix on a batch, soft targets (B, C)

``load_image`` is the one decoder (RGB, upright, bombs refused), used by both the scan and
the dataset, so every scanned sample decodes in training. ``write_animal_mnist`` writes the
demo data; ``make_image_folder`` writes tiny synthetic trees for tests and benchmarks.
"""

from __future__ import annotations

from snugtune.data.augment import batch_mixer, build_transforms, eval_transform
from snugtune.data.demo import ANIMAL_MNIST_CLASSES, write_animal_mnist
from snugtune.data.images import IMAGE_EXTENSIONS, load_image
from snugtune.data.loader import ImageDataset, SeededDataset, default_workers, make_loader
from snugtune.data.results import DataBundle, FileIssue, Sample, ScanResult
from snugtune.data.scan import MIN_SIDE_PX, scan_folder
from snugtune.data.split import split_samples
from snugtune.data.synthetic import make_image_folder

__all__ = [
    "ANIMAL_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MIN_SIDE_PX",
    "DataBundle",
    "FileIssue",
    "ImageDataset",
    "Sample",
    "ScanResult",
    "SeededDataset",
    "batch_mixer",
    "build_transforms",
    "default_workers",
    "eval_transform",
    "load_image",
    "make_image_folder",
    "make_loader",
    "scan_folder",
    "split_samples",
    "write_animal_mnist",
]
