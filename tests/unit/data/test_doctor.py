"""The data doctor: exact and near copies within a class, across classes, across the split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from snugtune.cli import main
from snugtune.data import Sample, scan_folder
from snugtune.data.doctor import DataDoctor, examine, near_pairs


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)  # blocks: survives re-encoding
    return Image.fromarray(smooth).resize((64, 64), Image.Resampling.NEAREST)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
    for i in range(6):
        _picture(i).save(root / "cat" / f"{i}.png")
        _picture(100 + i).save(root / "dog" / f"{i}.png")
    shutil.copy(root / "cat" / "0.png", root / "cat" / "0_copy.png")  # exact, one class
    shutil.copy(root / "cat" / "1.png", root / "dog" / "cat_1.png")  # exact, two classes
    _picture(2).save(root / "cat" / "2_again.jpg", quality=95)  # the same picture, re-encoded
    return root


def _split(scan, val_names):
    samples = scan.samples
    val = tuple(s for s in samples if Path(s.path).name in val_names)
    return tuple(s for s in samples if s not in val), val


def test_copies_are_grouped_by_what_they_break(messy: Path):
    scan = scan_folder(messy, workers=1)
    train, val = _split(scan, {"0_copy.png"})
    found = examine(scan.classes, train, val)
    by_problem = {p: [{Path(f[0]).name for f in g.files} for g in found.of(p)]
                  for p in ("conflicting labels", "leakage", "duplicates")}
    assert by_problem["conflicting labels"] == [{"1.png", "cat_1.png"}]
    assert by_problem["leakage"] == [{"0.png", "0_copy.png"}]  # one side in validation
    assert by_problem["duplicates"] == [{"2.png", "2_again.jpg"}]
    assert found.of("duplicates")[0].kind == "near" and found.of("leakage")[0].kind == "exact"
    assert found.counts()["leakage"] == {"groups": 1, "extra": 1}
    assert found.images == len(scan.samples)
    assert DataDoctor.from_dict(json.loads(json.dumps(found.to_dict()))) == found


def test_different_pictures_are_not_copies(tmp_path: Path):
    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            _picture(1000 + 100 * ord(c) + i).save(root / c / f"{i}.png")
    scan = scan_folder(root, workers=1)
    assert examine(scan.classes, scan.samples, ()).groups == ()


def test_files_without_fingerprints_are_left_out():
    found = examine(("a",), (Sample("/x.png", 0), Sample("/y.png", 0)), ())
    assert found.images == 0 and found.groups == ()


def _brute_force(hashes: np.ndarray, bits: int) -> set[tuple[int, int]]:
    """Every pair within ``bits``, by comparing all pairs (what the doctor did before)."""
    d = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    ii, jj = np.nonzero(np.triu(d <= bits, 1))
    return set(zip(ii.tolist(), jj.tolist(), strict=True))


@pytest.mark.parametrize("n", [2, 40, 2500])
@pytest.mark.parametrize("bits", [0, 4, 5])
def test_hash_index_finds_exactly_the_pairs_the_brute_force_finds(n: int, bits: int) -> None:
    rng = np.random.default_rng(n + bits)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64)
    for _ in range(n // 3):  # near copies: a random hash with 0-7 of its bits flipped
        v = int(hashes[rng.integers(n)])
        for b in rng.choice(64, int(rng.integers(0, 8)), replace=False):
            v ^= 1 << int(b)
        hashes[rng.integers(n)] = v
    hashes[: min(n, 4)] = 0  # a cluster of identical hashes
    hashes[-1] = np.uint64(2**64 - 1)  # the top bit set (signed in SQLite)
    found = set(map(tuple, near_pairs(hashes, bits).tolist()))
    assert found == _brute_force(hashes, bits)


def _groups_of(found) -> set[frozenset[str]]:
    return {frozenset(Path(f[0]).name for f in g.files) for g in found.groups}


def test_planted_copies_are_found_exactly(tmp_path: Path) -> None:
    """A generated set with known copies: identical files, re-encoded JPEGs, resized ones,
    and a copy in another class; every distinct picture stays alone."""
    root = tmp_path / "d"
    planted: set[frozenset[str]] = set()
    for c in ("a", "b", "c"):
        (root / c).mkdir(parents=True)
        for i in range(30):
            _picture(10_000 + 100 * ord(c) + i).save(root / c / f"{i}.png")
    for k in range(4):  # exact copies within a class
        shutil.copy(root / "a" / f"{k}.png", root / "a" / f"{k}_copy.png")
        planted.add(frozenset({f"{k}.png", f"{k}_copy.png"}))
    for k in range(4, 8):  # the same picture as a JPEG and at another size
        _picture(10_000 + 100 * ord("b") + k).save(root / "b" / f"{k}_q90.jpg", quality=90)
        _picture(10_000 + 100 * ord("b") + k).resize((96, 96)).save(root / "b" / f"{k}_big.png")
        planted.add(frozenset({f"{k}.png", f"{k}_q90.jpg", f"{k}_big.png"}))
    shutil.copy(root / "c" / "9.png", root / "a" / "c9.png")  # a copy in another class
    planted.add(frozenset({"9.png", "c9.png"}))
    scan = scan_folder(root, workers=1)
    assert _groups_of(examine(scan.classes, scan.samples, ())) == planted


def test_doctor_command(messy: Path, capsys):
    assert main(["doctor", str(messy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["doctor"]["counts"]["conflicting labels"]["groups"] == 1
    assert main(["doctor", str(messy)]) == 0
    text = capsys.readouterr().out
    assert "conflicting labels" in text and "cat_1.png" in text
