"""What a phase feeds its steps: augmented images, or cached backbone features.

A phase whose backbone is entirely frozen (``PhasePlan.feature_cache``) trains only the head,
so the backbone's pooled features are computed once (``recipe/cache.py``, in the cache folder
every run shares) and every epoch is a pass of the head over a (N, F) matrix:
``PhaseInputs.module`` is then ``model.head`` and both datasets yield ``(features (F,)
float32, label)``. Otherwise the datasets read the images decoded once (``data.decoded``).

Choices, and why:

* **One view per image**: the clean image (the validation pipeline). Caching augmented views
  as well was measured (Animal-MNIST 300/class, Lite0 at 96 px, 6 head epochs; 600 val
  images): the best val accuracy with 1 to 4 views per image was within a few images of each
  other, while on a 2-core CPU one augmented view cost more than the backbone's forward; so it
  was removed. That measurement is not recorded in a committed JSON.
* **The backbone runs in eval mode** for the fill, as Keras' ``base(x, training=False)``:
  BatchNorm uses its running statistics and dropout inside the backbone is off. (Uncached
  frozen training keeps a timm backbone's ``drop_rate`` dropout on the pooled features
  active; the head's own dropout applies in both.)
* **Fill speed**: inference mode, JPEG draft decode, worker processes, forward passes of
  ``CPU_FORWARD_CHUNK`` images on the CPU, channels_last on the CPU (faster for
  EfficientNet-Lite0 at 96 px; a layout change only: float noise), the phase's autocast
  precision (fp32 on the CPU unless ``--precision bf16``). bf16 is not picked for the fill
  alone: measured on Animal-MNIST with Lite0, bf16-autocast features differ from fp32 far
  beyond float noise (median relative L2; the fp16 storage's own rounding is far smaller), for
  the same head accuracy and, on the loaded 2-core machine, the same fill speed. Neither
  measurement is recorded in a committed JSON.
* **Out of memory** during the fill halves the forward chunk (``step.retry_halving``).
* **MixUp/CutMix** mix images; on pooled features MixUp would be a different regulariser
  (manifold mixup) and CutMix has no equivalent, so with a mixer the phase trains on images
  and the summary says why.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from snugtune.config import TrainConfig
from snugtune.data import (
    DataBundle,
    ImageStore,
    Sample,
    SeededDataset,
    batch_mixer,
    build_transforms,
    default_workers,
)
from snugtune.models import Classifier
from snugtune.planner import PhasePlan
from snugtune.recipe.cache import FillItem, fill_store, store_spec
from snugtune.recipe.setup import image_dataset
from snugtune.results import CacheInfo
from snugtune.rundir import file_sha256
from snugtune.step import CPU_FORWARD_CHUNK, MicroBatch, autocast, retry_halving
from snugtune.store import DataIndex, RecordStore

__all__ = ["CachedFeatures", "PhaseInputs", "cached_inputs", "phase_inputs"]

log = logging.getLogger(__name__)

_TINY = 256  # below this many files, decoding in this process beats starting workers


@dataclass(frozen=True)
class PhaseInputs:
    """What a phase trains: a module (the classifier, or just its head on cached features)
    and datasets addressed by ``(index, seed)`` (train) and plain index (val)."""

    module: nn.Module
    train: Dataset[Any]
    val: Dataset[Any] | None
    mixer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    feature_cache: CacheInfo | None = None

    @property
    def workers(self) -> int | None:
        """Loader workers: none for cached features (a gather from a memory map, faster in
        this process than a worker's start and hand-over), else the config's (None)."""
        return 0 if self.feature_cache and self.feature_cache.used else None


def phase_inputs(cfg: TrainConfig, model: Classifier, data: DataBundle, resolution: int,
                 plan: PhasePlan, device: torch.device, index: DataIndex,
                 images: ImageStore | None = None) -> PhaseInputs:
    """Datasets and the module a phase trains: cached features when valid, else images (from
    the decoded-image store ``images`` where it holds them)."""
    mixer = batch_mixer(cfg.augment, len(data.classes))
    reason = _no_cache_reason(cfg, model, plan, mixer is not None)
    if reason is None:
        return cached_inputs(cfg, model, data, resolution, plan, device, index, images)
    train = SeededDataset(image_dataset(data.train, model, cfg, resolution, train=True,
                                        images=images))
    val = image_dataset(data.val, model, cfg, resolution, train=False,
                        images=images) if data.val else None
    info = None if reason == "" else CacheInfo(used=False, reason=reason)
    if info:
        log.info("feature cache not used: %s", reason)
    return PhaseInputs(module=model, train=train, val=val, mixer=mixer, feature_cache=info)


def _no_cache_reason(cfg: TrainConfig, model: Classifier, plan: PhasePlan, mixes: bool) -> str | None:
    """None when the cache applies; "" when it is irrelevant (backbone trains); else why not."""
    if not model.backbone_frozen():
        return ""
    if not cfg.feature_cache:
        return "turned off (--no-feature-cache)"
    if not plan.feature_cache:
        return "not chosen by the plan"
    if mixes:
        return "MixUp/CutMix mix whole images, which cached features cannot reproduce"
    return None


def cached_inputs(cfg: TrainConfig, model: Classifier, data: DataBundle, resolution: int,
                  plan: PhasePlan, device: torch.device, index: DataIndex,
                  images: ImageStore | None) -> PhaseInputs:
    """``data``'s features from the feature cache (filled where missing), and the head to
    train on them."""
    t0 = time.perf_counter()
    samples = data.train + data.val
    keys = [s.sha256 if len(s.sha256) == 32 else bytes.fromhex(file_sha256(s.path))
            for s in samples]  # a sample the scan did not fingerprint is hashed here
    workers = cfg.workers if cfg.workers is not None else default_workers(device.type)
    store = RecordStore(index, "features", store_spec(model, resolution, plan.precision))
    encoder = _Encoder(model, device, plan.precision, plan.channels_last or device.type == "cpu",
                       CPU_FORWARD_CHUNK if device.type == "cpu" else plan.micro_batch)
    pre = model.preprocessing
    transform = build_transforms(cfg.augment, size=resolution, mean=pre.mean, std=pre.std,
                                 train=False, interpolation=pre.interpolation)
    with store.filling():
        missing = _missing(store, keys, samples, images is not None)
        t_fill = time.perf_counter()
        with encoder.ready():
            fill_store(store, missing, transform, encoder, batch=encoder.micro.size,
                       workers=workers if len(missing) >= _TINY else 0, draft=resolution,
                       decoded=images.view(samples) if images is not None else None,
                       pin_memory=device.type == "cuda", show_progress=cfg.progress)
        fill_s = time.perf_counter() - t_fill
        found = store.locate(keys)
    width = int(found.nbytes[0])  # every record is one (F,) float16 row
    rows, shape = found.offsets // width, (store.end_bytes // width, width // 2)
    n = len(data.train)
    train = CachedFeatures(store.path, shape, rows[:n], [s.label for s in data.train])
    val = CachedFeatures(store.path, shape, rows[n:], [s.label for s in data.val]) \
        if data.val else None
    unique, misses = len(set(keys)), len(missing)
    info = CacheInfo(used=True, hits=unique - misses, misses=misses,
                     hit_rate=round((unique - misses) / max(1, unique), 4),
                     seconds=round(time.perf_counter() - t0, 3), fill_seconds=round(fill_s, 3),
                     fill_images_per_s=round(misses / fill_s, 1) if misses else None,
                     precision=plan.precision, channels_last=encoder.channels_last,
                     dir=str(store.path))
    log.info("feature cache: %d hits, %d misses in %.1f s, %s", info.hits, misses,
             info.seconds, store.path)
    return PhaseInputs(module=model.head, train=train, val=val, mixer=None, feature_cache=info)


def _missing(store: RecordStore, keys: Sequence[bytes], samples: Sequence[Sample],
             stored: bool) -> list[FillItem]:
    """The samples whose features ``store`` lacks (each content once); ``stored``: their
    decoded images are in the image store, at the same positions as ``samples``."""
    seen: set[bytes] = set()
    out = []
    for i, (key, s, have) in enumerate(zip(keys, samples, store.locate(keys).found.tolist(),
                                           strict=True)):
        if not have and key not in seen:
            seen.add(key)
            out.append(FillItem(s.path, key, i if stored else -1))
    return out


class _Encoder:
    """The frozen backbone as the fill's ``encode``: eval + inference mode, autocast,
    channels_last, and halving its chunk on out-of-memory."""

    def __init__(self, model: Classifier, device: torch.device, precision: str,
                 channels_last: bool, chunk: int) -> None:
        self.model, self.device, self.precision = model, device, precision
        self.channels_last, self.micro = channels_last, MicroBatch(max(1, chunk))

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

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> np.ndarray:
        """(B, 3, H, W) images -> (B, F) float32 features on the CPU."""
        feats, self.micro = retry_halving(
            lambda mb: np.concatenate([self._run(x[i : i + mb]) for i in range(0, x.shape[0], mb)]),
            self.micro, where="feature cache")
        return feats

    def _run(self, x: Tensor) -> np.ndarray:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device.type, self.precision):
            f = self.model.features(x)  # (b, F)
        return f.float().cpu().numpy()


def _is_channels_last(module: nn.Module) -> bool:
    w = next((p for p in module.parameters() if p.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


class CachedFeatures(Dataset[tuple[Tensor, int]]):
    """Cached features with labels, read from the store's memory map.

    Args:
        path: the store's ``features.f16``.
        shape: (rows, F) of that file when the rows were looked up.
        rows: N store rows, one per item.
        labels: N class indices.

    Items are ``(index, seed)`` (training; the seed does not change a cached feature) or
    ``index``.
    """

    def __init__(self, path: Any, shape: tuple[int, int], rows: np.ndarray, labels: Sequence[int]) -> None:
        self.path, self.shape = path, shape
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:  # workers re-open the map instead of copying it
        return {**self.__dict__, "_matrix": None}

    def __getitems__(self, items: Sequence[int | tuple[int, int]]) -> list[tuple[Tensor, int]]:
        """A batch in one gather (the DataLoader calls this instead of ``__getitem__``)."""
        if self._matrix is None:
            self._matrix = np.memmap(self.path, dtype=np.float16, mode="r", shape=self.shape)
        index = [int(it[0]) if isinstance(it, tuple | list) else int(it) for it in items]
        feats = torch.from_numpy(self._matrix[self.rows[index]].astype(np.float32))  # (B, F)
        return list(zip(feats.unbind(0), self.labels[index].tolist(), strict=True))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, int]:
        return self.__getitems__([item])[0]
