"""Tiny generated image folders and fast settings for end-to-end runs on the CPU."""

from pathlib import Path

import pytest

from snugtune.data import make_image_folder

FAST = ["--model", "timm:test_resnet", "--weights", "none", "--res", "32",
        "--batch-size", "8", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    make_image_folder(root, classes=3, per_class=12, size=32, seed=0)
    return root
