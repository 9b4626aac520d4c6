"""Feature cache for fully frozen phases: pooled backbone features, computed once, stored fp16.

Layout, one *store* per backbone configuration::

    <root>/<store key>/spec.json      what the store key covers, readable
                      /features.f16    (rows, F) float16, raw, memory-mapped
                      /index.json      {"dim": F, "rows": n, "entries": {entry key: row}}
                      /lock            flock held while the store is looked up and filled

The **store key** is a sha256 over the backbone (resolved name, class, timm and torchvision
versions), the weights key *and* a digest of the backbone's actual tensors (so a changed weight
file, or weights changed in memory by an earlier fine-tuning phase, both give a new store), the
preprocessing (size, mean, std, interpolation), the resolution and the fill's compute precision.
An **entry key** is the sha256 of the file's bytes (not its size and mtime: a file rewritten
with the same size and a restored mtime must still miss) with the evaluation transform's tag.
Any change misses; the old rows stay until the folder is deleted.

Rows are appended before the index that names them is replaced atomically, so a fill killed at
any moment leaves a valid store (and the next run reuses the rows that were indexed). The
whole look-up-and-fill holds an exclusive ``flock``: a second process (another run on a shared
cache, or another rank of the same run) waits, then finds every entry filled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, get_worker_info

from snugtune.data import load_image
from snugtune.data.loader import seed_worker
from snugtune.recipe.progress import progress
from snugtune.rundir import RunDir, file_sha256, write_json

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FORMAT",
    "FeatureStore",
    "FillItem",
    "backbone_digest",
    "cache_root",
    "content_hashes",
    "entry_key",
    "fill_store",
    "store_spec",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
#: Set to a folder to share one feature cache between runs (default: ``<run>/feature_cache``).
CACHE_DIR_ENV = "SNUGTUNE_FEATURE_CACHE_DIR"
_FP16_MAX = 65504.0

Transform = Callable[[Image.Image], Tensor]


def cache_root(run: RunDir) -> Path:
    """``$SNUGTUNE_FEATURE_CACHE_DIR`` when set, else the run's ``feature_cache``."""
    shared = os.environ.get(CACHE_DIR_ENV)
    return Path(shared).expanduser() if shared else run.feature_cache


def content_hashes(paths: Sequence[str], workers: int = 4) -> list[str]:
    """sha256 of each file's bytes (threads: hashlib and file reads release the GIL)."""
    if len(paths) < 64 or workers <= 1:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(file_sha256, paths, chunksize=64))


def backbone_digest(backbone: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every tensor of ``backbone``."""
    h = hashlib.sha256()
    for name, t in backbone.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def store_spec(model: Any, resolution: int, compute: str) -> dict[str, Any]:
    """Everything a store's features depend on besides the file and its transform.

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
        "compute": compute,
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def entry_key(content: str) -> str:
    """The key of one cached feature vector: the file's content hash, evaluation transform."""
    return f"{content}|eval"


class FeatureStore:
    """One store of the cache: an append-only fp16 matrix plus its entry index.

    Args:
        root: the cache folder (``cache_root``).
        spec: ``store_spec(...)``; its digest names the store's folder.
    """

    def __init__(self, root: Path, spec: Mapping[str, Any]) -> None:
        self.key = _digest(dict(spec))[:24]
        self.dir = root / self.key
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if not spec_file.exists():
            write_json(spec_file, dict(spec))
        self.data_path = self.dir / "features.f16"
        self.dim, self.rows, self.entries = self._read_index()

    def _read_index(self) -> tuple[int, int, dict[str, int]]:
        path = self.dir / "index.json"
        if not path.exists():
            return 0, 0, {}
        try:
            data = json.loads(path.read_text())
            dim, rows, entries = int(data["dim"]), int(data["rows"]), dict(data["entries"])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("feature cache index %s unreadable (%s): starting the store afresh", path, e)
            return 0, 0, {}
        have = self.data_path.stat().st_size if self.data_path.exists() else 0
        if have < rows * dim * 2:
            log.warning("feature cache %s is shorter than its index: starting afresh", self.dir)
            return 0, 0, {}
        return dim, rows, entries

    @contextlib.contextmanager
    def locked(self) -> Iterator[FeatureStore]:
        """Hold the store's exclusive lock (re-reading the index, which another process may
        have extended) for a look-up followed by a fill."""
        with open(self.dir / "lock", "a+b") as f:
            _flock(f.fileno(), exclusive=True)
            try:
                self.dim, self.rows, self.entries = self._read_index()
                yield self
            finally:
                _flock(f.fileno(), exclusive=False)

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of ``keys`` (int64, -1 where missing)."""
        get = self.entries.get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def append(self, keys: Sequence[str], features: np.ndarray) -> None:
        """Add (n, F) features under ``keys`` (new keys only): data first, then the index."""
        feats = np.clip(np.asarray(features, dtype=np.float32), -_FP16_MAX, _FP16_MAX)
        feats = np.ascontiguousarray(feats.astype(np.float16))
        if self.dim and feats.shape[1] != self.dim:
            raise ValueError(f"feature width {feats.shape[1]} != the store's {self.dim}")
        self.dim = int(feats.shape[1])
        mode = "r+b" if self.data_path.exists() else "w+b"
        with open(self.data_path, mode) as f:
            f.truncate(self.rows * self.dim * 2)  # drop rows a killed fill left unindexed
            f.seek(self.rows * self.dim * 2)
            f.write(feats.tobytes())
            f.flush()
            os.fsync(f.fileno())
        for i, k in enumerate(keys):
            self.entries[k] = self.rows + i
        self.rows += len(keys)
        index = {"dim": self.dim, "rows": self.rows, "entries": self.entries}
        write_json(self.dir / "index.json", index, indent=None)

    def matrix(self) -> np.ndarray:
        """The (rows, F) float16 features, memory-mapped read-only."""
        if not self.rows:
            return np.zeros((0, self.dim), dtype=np.float16)
        return np.memmap(self.data_path, dtype=np.float16, mode="r", shape=(self.rows, self.dim))


def _flock(fd: int, *, exclusive: bool) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; one run per cache folder there
        return
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN)


@dataclass(frozen=True)
class FillItem:
    """One file to encode, and the key its features go under."""

    path: str
    key: str


class _FillDataset(Dataset[tuple[Tensor, str]]):
    """Decodes and transforms each file: ``(image (3, H, W), key)``."""

    def __init__(self, items: Sequence[FillItem], transform: Transform, draft: int) -> None:
        self.items, self.transform, self.draft = tuple(items), transform, draft

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        item = self.items[i]
        with _one_thread():
            return self.transform(load_image(item.path, draft_size=self.draft)), item.key


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread for per-image transforms decoded in the main process: on a busy
    machine, OpenMP teams on tiny tensors spin-wait (measured 220 ms vs 5 ms per view)."""
    if get_worker_info() is not None:  # workers already run single-threaded
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _collate(batch: list[tuple[Tensor, str]]) -> tuple[Tensor, list[str]]:
    return torch.stack([x for x, _ in batch]), [k for _, k in batch]


#: Decode in worker processes only when decoding a batch takes at least this share of encoding
#: it. Measured on 2 cores (28 px PNGs, MobileNetV2 at 96 px): decoding in this process filled
#: 258 images/s, with 1 worker 204, with 2 workers 168-185 (workers' CPU comes out of the
#: forward's); large JPEGs decode slower than the forward, and then workers pay.
WORKER_DECODE_SHARE = 0.5


class _Batches:
    """Accumulates encoded rows and appends them to the store every ``flush_rows`` rows."""

    def __init__(self, store: FeatureStore, flush_rows: int) -> None:
        self.store, self.flush_rows, self.added = store, flush_rows, 0
        self.keys: list[str] = []
        self.feats: list[np.ndarray] = []

    def add(self, keys: list[str], feats: np.ndarray) -> None:
        self.keys += keys
        self.feats.append(feats)
        if len(self.keys) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self.store.append(self.keys, np.concatenate(self.feats))
            self.added, self.keys, self.feats = self.added + len(self.keys), [], []


def fill_store(
    store: FeatureStore,
    items: Sequence[FillItem],
    transform: Transform,
    encode: Callable[[Tensor], np.ndarray],
    *,
    batch: int,
    workers: int,
    draft: int,
    pin_memory: bool = False,
    show_progress: bool = True,
    flush_rows: int = 4096,
) -> int:
    """Encode every item and append its features to ``store``; returns the rows added.

    The first batch is decoded here and timed against its encoding; the rest is decoded by
    ``workers`` processes only if decoding took at least ``WORKER_DECODE_SHARE`` of encoding.

    Args:
        store: the (locked) store.
        items: files with their missing entries.
        transform: PIL image -> (3, H, W) tensor (the evaluation pipeline).
        encode: (B, 3, H, W) images -> (B, F) float32 numpy features.
        batch: images per forward pass.
        workers: at most this many decoding worker processes.
        draft: JPEG draft-decode size (the resolution).
        pin_memory: page-locked batches (CUDA).
        show_progress: draw a progress bar.
        flush_rows: rows appended per write, so that a killed fill keeps what it computed.
    """
    if not items:
        return 0
    files = max(1, batch)
    out = _Batches(store, flush_rows)
    t0 = time.perf_counter()
    head = _FillDataset(items[:files], transform, draft)
    x, keys = _collate([head[i] for i in range(len(head))])
    t1 = time.perf_counter()
    out.add(keys, encode(x))
    decode_s, encode_s = t1 - t0, time.perf_counter() - t1
    workers = workers if decode_s >= WORKER_DECODE_SHARE * encode_s else 0
    log.debug("feature cache: first batch decoded in %.3f s, encoded in %.3f s: %d workers",
              decode_s, encode_s, workers)
    extra: dict[str, Any] = {"worker_init_fn": seed_worker, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(_FillDataset(items[files:], transform, draft), batch_size=files,
                        num_workers=workers, collate_fn=_collate, pin_memory=pin_memory, **extra)
    for x, keys in progress(loader, desc="feature cache", enabled=show_progress):
        out.add(keys, encode(x))
    out.flush()
    return out.added
