"""Feature cache: keys, invalidation, the store, and the phase inputs it yields."""

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
from snugtune.data import DataBundle, Sample, ScanResult, make_image_folder
from snugtune.models import build_classifier
from snugtune.recipe.cache import FeatureStore, backbone_digest, cache_root, content_hashes
from snugtune.recipe.inputs import CachedFeatures, phase_inputs
from snugtune.rundir import RunDir

NO_AUG = AugmentConfig(rotation_range=0, width_shift_range=0, height_shift_range=0, zoom_range=0,
                       horizontal_flip=False)
# What phase_inputs reads of the phase's plan (a PhasePlan has many more fields).
SETUP = SimpleNamespace(micro_batch=8, precision="fp32", feature_cache=True, channels_last=False)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("fc") / "data", classes=2, per_class=5, size=16)


def bundle(root: Path) -> DataBundle:
    files = sorted(root.glob("*/*.png"))
    samples = [Sample(str(p), int(p.parent.name[-1])) for p in files]
    scan = ScanResult(str(root), ("class_0", "class_1"), tuple(samples), None, (), (), (16, 16))
    return DataBundle(scan=scan, train=tuple(samples[1::2]), val=tuple(samples[::2]))


def model(weights: str = "none"):
    torch.manual_seed(0)
    m = build_classifier("timm:test_efficientnet", 2, weights=weights)
    m.set_trainable(0)
    return m


def inputs(tmp: Path, m, data: DataBundle, aug: AugmentConfig = NO_AUG, res: int = 16, **kw):
    cfg = TrainConfig(data=str(tmp), augment=aug, workers=0, progress=False, **kw)
    return phase_inputs(cfg, m, data, res, SETUP, CPU, RunDir(tmp / "run"))  # type: ignore[arg-type]


def cache_info(tmp: Path, m, data: DataBundle, **kw):  # type: ignore[no-untyped-def]
    return inputs(tmp, m, data, **kw).feature_cache.to_dict()


def test_content_hash_reads_bytes_not_size_or_mtime(tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 100)
    before, st = content_hashes([str(a)])[0], a.stat()
    a.write_bytes(b"y" * 100)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert content_hashes([str(a)])[0] != before
    paths = [str(a)] * 100  # threaded path gives the same answer
    assert content_hashes(paths, workers=4) == content_hashes(paths, workers=1)


def test_store_roundtrip_survives_a_killed_append(tmp_path: Path) -> None:
    spec = {"x": 1}
    s = FeatureStore(tmp_path, spec)
    f = np.arange(12, dtype=np.float32).reshape(3, 4)
    with s.locked():
        s.append(["a", "b", "c"], f)
    with open(s.data_path, "ab") as fh:  # a fill killed after writing rows, before the index
        fh.write(b"\0" * 40)
    s2 = FeatureStore(tmp_path, spec)
    assert s2.lookup(["c", "zz", "a"]).tolist() == [2, -1, 0]
    with s2.locked():
        s2.append(["d"], np.full((1, 4), 1e6))  # clipped to the fp16 range, not inf
    m = s2.matrix()
    assert m.shape == (4, 4) and np.array_equal(m[:3], f.astype(np.float16))
    assert np.isfinite(m).all() and m[3, 0] == np.float16(65504)
    assert FeatureStore(tmp_path, {"x": 2}).dir != s.dir


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
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = cache_info(tmp_path, m, data)
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
    s = FeatureStore(tmp_path, {"y": 1})
    with s.locked():
        s.append([str(i) for i in range(6)], np.arange(12, dtype=np.float32).reshape(6, 2))
    ds = CachedFeatures(s.data_path, (6, 2), np.array([0, 2, 4]), [0, 1, 2])
    x, y = ds[(2, 7)]
    assert x.dtype == torch.float32 and y == 2 and x.tolist() == [8, 9]
    batch = ds.__getitems__([(0, 1), (1, 1)])
    assert [b[1] for b in batch] == [0, 1]


def test_cache_not_used_with_a_mixer_or_when_off(tmp_path: Path, folder: Path) -> None:
    data, m = bundle(folder), model()
    mixed = inputs(tmp_path, m, data, aug=dataclasses.replace(NO_AUG, mixup_alpha=0.2))
    assert mixed.feature_cache.used is False and "MixUp" in mixed.feature_cache.reason
    assert mixed.module is m
    off = cache_info(tmp_path, m, data, feature_cache=False)
    assert off == {"used": False, "reason": "turned off (--no-feature-cache)"}
    m.set_trainable(1)
    assert inputs(tmp_path, m, data).feature_cache is None


def test_shared_cache_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root(RunDir(tmp_path)) == tmp_path / "feature_cache"
    monkeypatch.setenv("SNUGTUNE_FEATURE_CACHE_DIR", str(tmp_path / "shared"))
    assert cache_root(RunDir(tmp_path)) == tmp_path / "shared"
