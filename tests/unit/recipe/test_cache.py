"""Feature cache: keys, invalidation, sharing between runs, and the phase inputs it yields."""

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from snugtune.config import AugmentConfig, TrainConfig
from snugtune.data import DataBundle, make_image_folder, scan_folder
from snugtune.models import build_classifier
from snugtune.recipe.cache import as_records, backbone_digest
from snugtune.recipe.inputs import CachedFeatures, phase_inputs
from snugtune.store import CacheHome, DataIndex, RecordStore

NO_AUG = AugmentConfig(rotation_range=0, width_shift_range=0, height_shift_range=0, zoom_range=0,
                       horizontal_flip=False)
# What phase_inputs reads of the phase's plan (a PhasePlan has many more fields).
SETUP = SimpleNamespace(micro_batch=8, precision="fp32", feature_cache=True, channels_last=False)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("fc") / "data", classes=2, per_class=5, size=16)


def bundle(root: Path) -> DataBundle:
    """The folder scanned (fingerprints from the data index), every other image validation."""
    scan = scan_folder(root, workers=1)
    return DataBundle(scan=scan, train=scan.samples[1::2], val=scan.samples[::2])


def model(weights: str = "none"):
    torch.manual_seed(0)
    m = build_classifier("timm:test_efficientnet", 2, weights=weights)
    m.set_trainable(0)
    return m


def inputs(tmp: Path, m, data: DataBundle, aug: AugmentConfig = NO_AUG, res: int = 16, **kw):
    cfg = TrainConfig(data=str(tmp), augment=aug, workers=0, progress=False, **kw)
    with DataIndex.at() as index:
        return phase_inputs(cfg, m, data, res, SETUP, CPU, index)  # type: ignore[arg-type]


def cache_info(tmp: Path, m, data: DataBundle, **kw):  # type: ignore[no-untyped-def]
    return inputs(tmp, m, data, **kw).feature_cache.to_dict()


def test_second_pass_hits_and_a_changed_file_misses(tmp_path: Path, folder: Path) -> None:
    data, m = bundle(folder), model()
    first = cache_info(tmp_path, m, data)
    assert first["used"] and first["hits"] == 0 and first["misses"] == 10
    assert cache_info(tmp_path, m, data)["hit_rate"] == 1.0
    target = Path(data.train[0].path)
    st = target.stat()
    img = np.asarray(Image.open(target)).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime: new bytes
    again = cache_info(tmp_path, m, bundle(folder))  # the run scans again
    assert (again["hits"], again["misses"]) == (9, 1)


def test_preprocessing_resolution_and_weights_each_miss(tmp_path: Path, folder: Path) -> None:
    data, m = bundle(folder), model()
    inputs(tmp_path, m, data)
    m.preprocessing = dataclasses.replace(m.preprocessing, mean=(0.5, 0.5, 0.5))
    assert cache_info(tmp_path, m, data)["hits"] == 0
    assert cache_info(tmp_path, m, data, res=20)["hits"] == 0
    wfile = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in m.backbone.state_dict().items()}, str(wfile))
    m1 = model(str(wfile))
    inputs(tmp_path, m1, data)
    assert cache_info(tmp_path, m1, data)["hit_rate"] == 1.0
    state = m1.backbone.state_dict()
    first = next(iter(state))
    state[first] = state[first] * 1.01
    save_file({k: v.contiguous() for k, v in state.items()}, str(wfile))
    m2 = model(str(wfile))
    assert m2.weights.key != m1.weights.key
    assert cache_info(tmp_path, m2, data)["hits"] == 0


def test_in_memory_weight_change_misses() -> None:
    m = model()
    before = backbone_digest(m.backbone)
    with torch.no_grad():
        next(m.backbone.parameters()).add_(1e-3)
    assert backbone_digest(m.backbone) != before


def test_cached_features_batch_gather(tmp_path: Path) -> None:
    with DataIndex.open(CacheHome(tmp_path)) as index:
        s = RecordStore(index, "features", {"y": 1})
        with s.filling():
            s.append(as_records([bytes([i]) * 32 for i in range(6)],
                                np.arange(12, dtype=np.float32).reshape(6, 2)))
        ds = CachedFeatures(s.path, (6, 2), np.array([0, 2, 4]), [0, 1, 2])
    x, y = ds[(2, 7)]
    assert x.dtype == torch.float32 and y == 2 and x.tolist() == [8, 9]
    batch = ds.__getitems__([(0, 1), (1, 1)])
    assert [b[1] for b in batch] == [0, 1]


def test_features_are_clipped_to_the_float16_range() -> None:
    (_, row), = as_records([b"k" * 32], np.full((1, 4), 1e6))
    assert row.dtype == np.float16 and np.isfinite(row).all() and row[0] == np.float16(65504)


def test_cache_not_used_with_a_mixer_or_when_off(tmp_path: Path, folder: Path) -> None:
    data, m = bundle(folder), model()
    mixed = inputs(tmp_path, m, data, aug=dataclasses.replace(NO_AUG, mixup_alpha=0.2))
    assert mixed.feature_cache.used is False and "MixUp" in mixed.feature_cache.reason
    assert mixed.module is m
    off = cache_info(tmp_path, m, data, feature_cache=False)
    assert off == {"used": False, "reason": "turned off (--no-feature-cache)"}
    m.set_trainable(1)
    assert inputs(tmp_path, m, data).feature_cache is None


def test_a_second_run_with_another_out_hits_every_image(tmp_path: Path, folder: Path) -> None:
    data, m = bundle(folder), model()
    assert cache_info(tmp_path / "run1", m, data)["misses"] == 10
    again = cache_info(tmp_path / "run2", m, bundle(folder))
    assert (again["hits"], again["misses"], again["hit_rate"]) == (10, 0, 1.0)
