"""Image folders in, augmented tensor batches out.

::

    scan_folder(root, index)     -> ScanResult (classes, samples with fingerprints, skipped and
                                    converted files); unchanged files come from the data index;
                                    labels from class folders or a labels file (LabelsSpec)
    split_folder(scan, f, s)     -> DataBundle: (train, val), stratified, seeded, each group of
                                    copies on one side; the groups (find_copies, data.doctor)
    decode_once(samples, index)  -> ImageStore: every image decoded and resized once, shared
    build_transforms(aug, ...)   -> PIL image -> normalised tensor (Keras names -> v2)
    ImageDataset + make_loader   -> DataLoader of (images (B, 3, H, W), labels (B,))
    batch_mixer(aug, C)          -> MixUp/CutMix on a batch, soft targets (B, C)

``load_image`` is the one decoder (RGB, upright, bombs refused), used by the scan, the
decoded-image store and the dataset, so every scanned sample decodes in training.
``write_animal_mnist`` writes the demo data; ``make_image_folder`` writes tiny synthetic trees
for tests and benchmarks.
"""

from __future__ import annotations

from snugtune.data.augment import batch_mixer, build_transforms, eval_transform
from snugtune.data.decoded import ZOOM, DecodedImages, ImageStore, decode_once, zoom_size
from snugtune.data.demo import ANIMAL_MNIST_CLASSES, write_animal_mnist
from snugtune.data.images import IMAGE_EXTENSIONS, load_image
from snugtune.data.labels_file import LabelsSpec
from snugtune.data.loader import ImageDataset, SeededDataset, default_workers, make_loader
from snugtune.data.results import Copies, DataBundle, FileIssue, Sample, ScanResult
from snugtune.data.scan import MIN_SIDE_PX, scan_folder
from snugtune.data.split import saved_samples, split_folder, split_samples
from snugtune.data.synthetic import make_image_folder

__all__ = [
    "ANIMAL_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MIN_SIDE_PX",
    "ZOOM",
    "Copies",
    "DataBundle",
    "DecodedImages",
    "FileIssue",
    "ImageDataset",
    "ImageStore",
    "LabelsSpec",
    "Sample",
    "ScanResult",
    "SeededDataset",
    "batch_mixer",
    "build_transforms",
    "decode_once",
    "default_workers",
    "eval_transform",
    "load_image",
    "make_image_folder",
    "make_loader",
    "saved_samples",
    "scan_folder",
    "split_folder",
    "split_samples",
    "write_animal_mnist",
    "zoom_size",
]
