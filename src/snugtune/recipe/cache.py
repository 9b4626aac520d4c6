"""Feature cache for fully frozen phases: pooled backbone features, computed once, stored fp16
in the cache folder that every run shares (``store``), so a second run on the same data and
backbone, whatever its ``--out``, reads them instead of running the backbone.

A *store* (``store.RecordStore`` of kind ``features``) holds one record per image content: its
(F,) float16 features. Its key is a sha256 over ``store_spec``: the backbone (resolved name,
class, timm and torchvision versions), the weights key *and* a digest of the backbone's actual
tensors (so a changed weight file, or weights changed in memory by an earlier fine-tuning
phase, both give a new store), the preprocessing (size, mean, std, interpolation), the
resolution, the evaluation transform and the fill's compute precision. A record is found by
the image file's content, its SHA-256 from the scan (the data index re-checks a file whose
size, mtime, ctime, mode or inode changed, so a rewritten file has a new content key). Any
change misses; old records stay until ``snugtune cache --clear``.

Records are appended data first, index last (``store.records``), so a fill killed at any
moment leaves a valid store (and the next run reuses what was committed). The whole
look-up-and-fill holds the store's fill lock: a second process (another run on the shared
cache, or another rank of the same run) waits, then finds every record filled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import timm
import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

from snugtune.data import DecodedImages, load_image
from snugtune.data.loader import seed_worker
from snugtune.recipe.progress import progress
from snugtune.store import RecordStore

__all__ = ["CACHE_FORMAT", "FillItem", "as_records", "backbone_digest", "fill_store", "store_spec"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
_FP16_MAX = 65504.0

Transform = Callable[[Image.Image], Tensor]


def backbone_digest(backbone: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every tensor of ``backbone``."""
    h = hashlib.sha256()
    for name, t in backbone.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def store_spec(model: Any, resolution: int, compute: str) -> dict[str, Any]:
    """Everything a store's features depend on besides the file.

    Args:
        model: a ``Classifier`` (``spec``, ``weights``, ``preprocessing``, ``backbone``).
        resolution: input side in pixels.
        compute: ``"fp32"``, ``"bf16"`` or ``"fp16"``, the fill's autocast precision.
    """
    backbone = model.backbone
    return {
        "format": CACHE_FORMAT,
        "backbone": model.spec.qualified,
        "class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
        "libraries": {"timm": timm.__version__, "torchvision": torchvision.__version__},
        "weights": model.weights.key,
        "tensors": backbone_digest(backbone),
        "preprocessing": model.preprocessing.to_dict(),
        "resolution": int(resolution),
        "transform": "eval",
        "compute": compute,
        "dtype": "float16",
    }


def as_records(keys: Sequence[bytes], features: np.ndarray) -> list[tuple[bytes, np.ndarray]]:
    """(n, F) features as one float16 record per key (clipped to the float16 range)."""
    feats = np.clip(np.asarray(features, dtype=np.float32), -_FP16_MAX, _FP16_MAX)
    feats = np.ascontiguousarray(feats.astype(np.float16))
    return list(zip(keys, feats, strict=True))


@dataclass(frozen=True)
class FillItem:
    """One file to encode, the content its features go under, and its stored decoded image
    (position in the fill's ``DecodedImages``; -1: decode the file)."""

    path: str
    key: bytes
    stored: int = -1


class _FillDataset(Dataset[tuple[Tensor, bytes]]):
    """Reads (the stored image, else the file) and transforms each item: ``(image (3, H, W),
    key)``."""

    def __init__(self, items: Sequence[FillItem], transform: Transform, draft: int,
                 decoded: DecodedImages | None) -> None:
        self.items, self.transform, self.draft = tuple(items), transform, draft
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, bytes]:
        item = self.items[i]
        image = self.decoded.get(item.stored) if self.decoded and item.stored >= 0 else None
        with _one_thread():
            if image is None:
                image = load_image(item.path, draft_size=self.draft)
            return self.transform(image), item.key


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread for per-image transforms decoded in the main process: on a busy
    machine, OpenMP teams on tiny tensors spin-wait (a view took far longer with the full team
    in an earlier measurement that no committed JSON records)."""
    if get_worker_info() is not None:  # workers already run single-threaded
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _collate(batch: list[tuple[Tensor, bytes]]) -> tuple[Tensor, list[bytes]]:
    return torch.stack([x for x, _ in batch]), [k for _, k in batch]


#: Decode in worker processes only when decoding a batch takes at least this share of encoding
#: it. On 2 cores (28 px PNGs, MobileNetV2 at 96 px) decoding in this process filled fastest,
#: with 1 worker slower and with 2 workers slower still (workers' CPU comes out of the
#: forward's), in an earlier measurement that no committed JSON records; large JPEGs decode
#: slower than the forward, and then workers pay.
WORKER_DECODE_SHARE = 0.5


class _Batches:
    """Accumulates encoded rows and appends them to the store every ``flush_rows`` rows."""

    def __init__(self, store: RecordStore, flush_rows: int) -> None:
        self.store, self.flush_rows, self.added = store, flush_rows, 0
        self.keys: list[bytes] = []
        self.feats: list[np.ndarray] = []

    def add(self, keys: list[bytes], feats: np.ndarray) -> None:
        self.keys += keys
        self.feats.append(feats)
        if len(self.keys) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self.store.append(as_records(self.keys, np.concatenate(self.feats)))
            self.added, self.keys, self.feats = self.added + len(self.keys), [], []


def fill_store(
    store: RecordStore,
    items: Sequence[FillItem],
    transform: Transform,
    encode: Callable[[Tensor], np.ndarray],
    *,
    batch: int,
    workers: int,
    draft: int,
    decoded: DecodedImages | None = None,
    pin_memory: bool = False,
    show_progress: bool = True,
    flush_rows: int = 4096,
) -> int:
    """Encode every item and append its features to ``store``; returns the rows added.

    The first batch is decoded here and timed against its encoding; the rest is decoded by
    ``workers`` processes only if decoding took at least ``WORKER_DECODE_SHARE`` of encoding.

    Args:
        store: the store (its fill lock held).
        items: files with their missing records.
        transform: PIL image -> (3, H, W) tensor (the evaluation pipeline).
        encode: (B, 3, H, W) images -> (B, F) float32 numpy features.
        batch: images per forward pass.
        workers: at most this many decoding worker processes.
        draft: JPEG draft-decode size (the resolution).
        decoded: the items' stored decoded images (``FillItem.stored`` indexes it).
        pin_memory: page-locked batches (CUDA).
        show_progress: draw a progress bar.
        flush_rows: rows appended per write, so that a killed fill keeps what it computed.
    """
    if not items:
        return 0
    files = max(1, batch)
    out = _Batches(store, flush_rows)
    t0 = time.perf_counter()
    head = _FillDataset(items[:files], transform, draft, decoded)
    x, keys = _collate([head[i] for i in range(len(head))])
    t1 = time.perf_counter()
    out.add(keys, encode(x))
    decode_s, encode_s = t1 - t0, time.perf_counter() - t1
    workers = workers if decode_s >= WORKER_DECODE_SHARE * encode_s else 0
    log.debug("feature cache: first batch decoded in %.3f s, encoded in %.3f s: %d workers",
              decode_s, encode_s, workers)
    extra: dict[str, Any] = {"worker_init_fn": seed_worker, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(_FillDataset(items[files:], transform, draft, decoded), batch_size=files,
                        num_workers=workers, collate_fn=_collate, pin_memory=pin_memory, **extra)
    for x, keys in progress(loader, desc="feature cache", enabled=show_progress):
        out.add(keys, encode(x))
    out.flush()
    return out.added
