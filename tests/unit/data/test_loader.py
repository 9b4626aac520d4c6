"""ImageDataset and make_loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from snugtune.config import AugmentConfig
from snugtune.data import (
    ImageDataset,
    SeededDataset,
    build_transforms,
    default_workers,
    make_image_folder,
    make_loader,
    scan_folder,
)

SIZE = 16


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory):
    root = make_image_folder(tmp_path_factory.mktemp("loader"), classes=2, per_class=6, size=24)
    return scan_folder(root).samples


def _train_tf():
    aug = AugmentConfig(rotation_range=20, color_jitter=0.3, random_erasing=0.5)
    return build_transforms(aug, size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, train=True)


def _eval_tf():
    return build_transforms(AugmentConfig(), size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3, train=False)


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_dataset_items_and_labels(samples) -> None:
    tf = build_transforms(AugmentConfig(), size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3, train=False)
    ds = ImageDataset(samples, tf, draft_size=SIZE)
    assert len(ds) == 12 and ds.labels == tuple(s.label for s in samples)
    x, y = ds[7]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32 and y == samples[7].label


def test_loader_tiny_dataset_runs_in_process_and_batches(samples) -> None:
    loader = make_loader(ImageDataset(samples, _train_tf()), batch_size=5, drop_last=True)
    assert loader.num_workers == 0
    batches = _batches(loader)
    assert [x.shape for x, _ in batches] == [(5, 3, SIZE, SIZE)] * 2
    assert batches[0][1].dtype == torch.int64


def test_shuffle_order_is_seeded(samples) -> None:
    tf = build_transforms(AugmentConfig(), size=SIZE, mean=(0.5,) * 3, std=(0.5,) * 3, train=False)
    ds = ImageDataset(samples, tf)

    def order(seed: int) -> list[int]:
        return [
            int(v) for _, y in make_loader(ds, batch_size=4, shuffle=True, seed=seed) for v in y
        ]

    labels = [s.label for s in samples]
    assert order(3) == order(3)
    assert sorted(order(3)) == sorted(labels)
    assert any(order(s) != order(3) for s in (4, 5, 6))


def test_augmentation_reproducible_for_a_seed(samples) -> None:
    ds = ImageDataset(samples, _train_tf())
    torch.manual_seed(0)
    a = _batches(make_loader(ds, batch_size=4, shuffle=True, seed=1))
    torch.manual_seed(0)
    b = _batches(make_loader(ds, batch_size=4, shuffle=True, seed=1))
    assert all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


def test_worker_loader_settings_and_single_items(samples) -> None:
    ds = ImageDataset(samples, _eval_tf())
    in_process = _batches(make_loader(ds, batch_size=4, seed=2, workers=0))
    loader = make_loader(ds, batch_size=4, seed=2, workers=2)
    assert loader.persistent_workers and loader.prefetch_factor == 2
    assert loader.worker_init_fn is not None
    with_workers = _batches(loader)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(in_process, with_workers, strict=True))
    x3, _ = ds[3]  # one item alone: same as inside the batch
    assert torch.equal(x3, in_process[0][0][3])


def test_loader_arguments(samples) -> None:
    ds = ImageDataset(samples, _train_tf())
    with pytest.raises(ValueError, match="not both"):
        make_loader(ds, batch_size=2, shuffle=True, sampler=torch.utils.data.SequentialSampler(ds))
    loader = make_loader(ds, batch_size=2, sampler=torch.utils.data.SequentialSampler(ds))
    assert [int(v) for _, y in loader for v in y] == [s.label for s in samples]
    assert 1 <= default_workers("cuda") <= 4
    assert 0 <= default_workers("cpu") <= default_workers("cuda")


def test_missing_file_at_load_time_names_it(tmp_path: Path) -> None:
    from snugtune.data import Sample
    from snugtune.errors import DataError

    ds = ImageDataset([Sample(str(tmp_path / "gone.png"), 0)], _train_tf())
    with pytest.raises(DataError, match="gone.png"):
        ds[0]


def test_seeded_items_are_pure_and_seed_only_the_cpu_generator(samples, monkeypatch) -> None:
    """An item's augmentation is a function of (index, seed) alone, leaves the global stream
    as it was, and never goes through ``torch.manual_seed`` (whose accelerator seeding formats
    the caller's stack on every call: loader_cost.json's ``seed_us``)."""
    ds = SeededDataset(ImageDataset(samples, _train_tf()))
    first = ds[(3, 7)][0]
    monkeypatch.setattr(torch, "manual_seed", lambda _s: pytest.fail("torch.manual_seed called"))
    torch.default_generator.manual_seed(0)
    state = torch.get_rng_state()
    again, other_seed = ds[(3, 7)][0], ds[(3, 8)][0]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again) and not torch.equal(first, other_seed)
