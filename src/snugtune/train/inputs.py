"""What a phase feeds its steps: augmented images, or cached backbone features.

A phase whose backbone is entirely frozen (``PhaseSetup.feature_cache``) trains only the head,
so the backbone's pooled features are computed once (``train/cache.py``) and every epoch is a
pass of the head over a (N, F) matrix: ``PhaseInputs.module`` is then ``model.head`` and both
datasets yield ``(features (F,) float32, label)``.

Choices, and why:

* **Views.** View 0 of a training image is the clean image (the validation pipeline); views
  1..K-1 are augmented with the training pipeline, each seeded from its cache key, so a view
  is the same in every run. Each epoch, training item ``(index, seed)`` takes view
  ``pick(seed, index) % K``: deterministic, independent of workers and resume. ``K`` is
  ``--cache-views``, by default ``DEFAULT_VIEWS`` (1: see there why), and 1 whenever
  augmentation is off (identical views would only cost time). Validation features are view 0.
* **The backbone runs in eval mode** for the fill, as Keras' ``base(x, training=False)``:
  BatchNorm uses its running statistics and dropout inside the backbone is off. (Uncached
  frozen training keeps a timm backbone's ``drop_rate`` dropout on the pooled features
  active; the head's own dropout applies in both.)
* **Fill speed**: inference mode, one decode per file for all its views, JPEG draft decode,
  worker processes, forward passes of ``CPU_FORWARD_CHUNK`` images on the CPU, channels_last on the CPU
  (measured ~1.9x for EfficientNet-Lite0 at 96 px, a layout change only: float noise), the
  phase's autocast precision (fp32 on the CPU unless ``--precision bf16``). bf16 is not picked
  for the fill alone: measured on Animal-MNIST with Lite0, bf16-autocast features differ from
  fp32 by 5.6% relative L2 (median; fp16 storage: ~0.05%), far beyond float noise, for the same
  head accuracy and, on the loaded 2-core machine, the same fill speed.
* **MixUp/CutMix** mix images; on pooled features MixUp would be a different regulariser
  (manifold mixup) and CutMix has no equivalent, so with a mixer the phase trains on images
  and the summary says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from snugtune.config import TrainConfig
from snugtune.data import batch_mixer, build_transforms, default_workers
from snugtune.models import Classifier
from snugtune.train.cache import (
    FeatureStore,
    FillItem,
    cache_root,
    content_hashes,
    entry_key,
    fill_store,
    store_spec,
    transform_id,
    view_seed,
)
from snugtune.train.loop import CPU_FORWARD_CHUNK
from snugtune.train.phase import PhaseInputs
from snugtune.train.planning import PhaseSetup
from snugtune.train.setup import DataBundle, SeededDataset, image_dataset

__all__ = ["DEFAULT_VIEWS", "CachedFeatures", "phase_inputs"]

log = logging.getLogger(__name__)

#: Views per training image unless --cache-views says otherwise: the clean view only. Measured
#: (Animal-MNIST 300/class, Lite0 at 96 px, 6 head epochs; 600 val images): best val accuracy
#: 0.940 (K=1), 0.948 (2), 0.945 (3), 0.938 (4), within a few images of each other, while on a
#: 2-core CPU one augmented view (~5 ms) costs more than the backbone's forward (~2.5 ms).
DEFAULT_VIEWS = 1
_TINY = 256  # below this many files, decoding in this process beats starting workers


def phase_inputs(
    cfg: TrainConfig,
    model: Classifier,
    data: DataBundle,
    resolution: int,
    setup: PhaseSetup,
    device: torch.device,
    run_dir: Path,
) -> PhaseInputs:
    """Datasets and the module a phase trains: cached features when valid, else images."""
    mixer = batch_mixer(cfg.augment, len(data.classes))
    reason = _no_cache_reason(cfg, model, setup, mixer is not None)
    if reason is None:
        return _cached_inputs(cfg, model, data, resolution, setup, device, run_dir)
    train = SeededDataset(image_dataset(data.train, model, cfg, resolution, train=True))
    val = image_dataset(data.val, model, cfg, resolution, train=False) if data.val else None
    info = None if reason == "" else {"used": False, "reason": reason}
    if info:
        log.info("feature cache not used: %s", reason)
    return PhaseInputs(module=model, train=train, val=val, mixer=mixer, feature_cache=info)


def _no_cache_reason(cfg: TrainConfig, model: Classifier, setup: PhaseSetup, mixes: bool) -> str | None:
    """None when the cache applies; "" when it is irrelevant (backbone trains); else why not."""
    if not model.backbone_frozen():
        return ""
    if not cfg.feature_cache:
        return "turned off (--no-feature-cache)"
    if not setup.feature_cache:
        return "not chosen by the plan"
    if mixes:
        return "MixUp/CutMix mix whole images, which cached features cannot reproduce"
    return None


def cache_views(cfg: TrainConfig) -> int:
    """K: views cached per training image (1 when augmentation is off)."""
    if cfg.augment.is_identity():
        return 1
    return int(cfg.cache_views or DEFAULT_VIEWS)


def _keys(hashes: Sequence[str], views: int, aug: str) -> list[list[str]]:
    return [[entry_key(h, "eval", 0)] + [entry_key(h, aug, v) for v in range(1, views)] for h in hashes]


def _missing(store: FeatureStore, keys: Sequence[str], paths: Sequence[str]) -> list[FillItem]:
    """Files with their entries absent from ``store`` (each key once)."""
    rows = store.lookup(keys)
    by_path: dict[str, list[tuple[str, str, int | None]]] = {}
    seen: set[str] = set()
    for key, path, row in zip(keys, paths, rows.tolist(), strict=True):
        if row >= 0 or key in seen:
            continue
        seen.add(key)
        tid = key.split("|")[1]
        by_path.setdefault(path, []).append((key, tid, None if tid == "eval" else view_seed(key)))
    return [FillItem(p, tuple(v)) for p, v in by_path.items()]


def _cached_inputs(
    cfg: TrainConfig, model: Classifier, data: DataBundle, resolution: int, setup: PhaseSetup,
    device: torch.device, run_dir: Path,
) -> PhaseInputs:
    t0 = time.perf_counter()
    views = cache_views(cfg)
    aug = transform_id(dataclasses.asdict(cfg.augment))
    train_paths, val_paths = [s.path for s in data.train], [s.path for s in data.val]
    workers = cfg.workers if cfg.workers is not None else default_workers(device.type)
    hashes = content_hashes(train_paths + val_paths, workers=max(1, workers))
    keys = [k for row in _keys(hashes[: len(train_paths)], views, aug) for k in row]
    keys += [entry_key(h, "eval", 0) for h in hashes[len(train_paths) :]]
    paths = [p for p in train_paths for _ in range(views)] + val_paths
    store = FeatureStore(cache_root(run_dir), store_spec(model, resolution, setup.precision))
    encoder = _Encoder(model, device, setup.precision, setup.channels_last or device.type == "cpu",
                       CPU_FORWARD_CHUNK if device.type == "cpu" else 2 * setup.micro_batch)
    with store.locked():
        items = _missing(store, keys, paths)
        misses = sum(len(it.views) for it in items)
        t_fill = time.perf_counter()
        with encoder.ready():
            fill_store(store, items, _transforms(cfg, model, resolution), encoder, batch=encoder.chunk,
                       workers=workers if len(items) >= _TINY else 0, draft=resolution,
                       pin_memory=device.type == "cuda", show_progress=cfg.progress)
        fill_s = time.perf_counter() - t_fill
        rows = store.lookup(keys)
    n = len(train_paths) * views
    shape = (store.rows, store.dim)
    train = CachedFeatures(store.data_path, shape, rows[:n].reshape(-1, views),
                           [s.label for s in data.train])
    val = CachedFeatures(store.data_path, shape, rows[n:, None], [s.label for s in data.val]) \
        if data.val else None
    unique = len(set(keys))
    info = {"used": True, "hit_rate": round((unique - misses) / max(1, unique), 4), "views": views,
            "seconds": round(time.perf_counter() - t0, 3), "hits": unique - misses, "misses": misses,
            "fill_seconds": round(fill_s, 3), "fill_images_per_s": round(misses / fill_s, 1) if misses else None,
            "precision": setup.precision, "channels_last": encoder.channels_last, "dir": str(store.dir)}
    log.info("feature cache: %d hits, %d misses (%d views) in %.1f s, %s", info["hits"], misses,
             views, info["seconds"], store.dir)
    return PhaseInputs(module=model.head, train=train, val=val, mixer=None, feature_cache=info)


def _transforms(cfg: TrainConfig, model: Classifier, resolution: int) -> dict[str, Any]:
    pre = model.preprocessing
    kw = {"size": resolution, "mean": pre.mean, "std": pre.std, "interpolation": pre.interpolation}
    return {"eval": build_transforms(cfg.augment, train=False, **kw),  # type: ignore[arg-type]
            transform_id(dataclasses.asdict(cfg.augment)): build_transforms(cfg.augment, train=True, **kw)}  # type: ignore[arg-type]


class _Encoder:
    """The frozen backbone as the fill's ``encode``: eval + inference mode, autocast,
    channels_last, and halving its chunk on out-of-memory."""

    def __init__(self, model: Classifier, device: torch.device, precision: str,
                 channels_last: bool, chunk: int) -> None:
        self.model, self.device, self.precision = model, device, precision
        self.channels_last, self.chunk = channels_last, max(1, chunk)

    @contextlib.contextmanager
    def ready(self) -> Iterator[_Encoder]:
        """Eval mode (and channels_last) for the fill; the model's state is restored after."""
        was, backbone = self.model.training, self.model.backbone
        convert = self.channels_last and not _is_channels_last(backbone)
        self.model.eval()
        if convert:
            backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        try:
            yield self
        finally:
            if convert:
                backbone.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
            self.model.train(was)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> np.ndarray:
        """(B, 3, H, W) images -> (B, F) float32 features on the CPU."""
        while True:
            try:
                return np.concatenate([self._run(x[i : i + self.chunk])
                                       for i in range(0, x.shape[0], self.chunk)])
            except torch.OutOfMemoryError:
                if self.chunk == 1:
                    raise
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.chunk //= 2
                log.warning("feature cache: out of memory; encoding %d images at a time", self.chunk)

    def _run(self, x: Tensor) -> np.ndarray:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            f = self.model.features(x)  # (b, F)
        return f.float().cpu().numpy()


def _is_channels_last(module: torch.nn.Module) -> bool:
    w = next((p for p in module.parameters() if p.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def _pick(seed: int, index: int, views: int) -> int:
    """The view training item ``(index, seed)`` takes this epoch (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + index) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) % views


class CachedFeatures(Dataset[tuple[Tensor, int]]):
    """Cached features with labels, read from the store's memory map.

    Args:
        path: the store's ``features.f16``.
        shape: (rows, F) of that file when the rows were looked up.
        rows: (N, K) store rows of each item's views (K = 1 for validation).
        labels: N class indices.

    Items are ``(index, seed)`` (training: one of the K views, picked per epoch) or ``index``.
    """

    def __init__(self, path: Path, shape: tuple[int, int], rows: np.ndarray, labels: Sequence[int]) -> None:
        self.path, self.shape = path, shape
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:  # workers re-open the map instead of copying it
        return {**self.__dict__, "_matrix": None}

    def _row(self, item: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(item, tuple | list):
            index, seed = int(item[0]), int(item[1])
            return index, int(self.rows[index, _pick(seed, index, self.rows.shape[1])])
        return int(item), int(self.rows[int(item), 0])

    def __getitems__(self, items: Sequence[int | tuple[int, int]]) -> list[tuple[Tensor, int]]:
        """A batch in one gather (the DataLoader calls this instead of ``__getitem__``)."""
        if self._matrix is None:
            self._matrix = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)
        pairs = [self._row(it) for it in items]
        feats = torch.from_numpy(self._matrix[[r for _, r in pairs]].astype(np.float32))  # (B, F)
        return list(zip(feats.unbind(0), self.labels[[i for i, _ in pairs]].tolist(), strict=True))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, int]:
        return self.__getitems__([item])[0]
