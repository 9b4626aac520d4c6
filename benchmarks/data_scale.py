"""Data at scale: the data index, the data doctor and decode-once on generated folders.

Generates its data under ``--work`` and deletes it when done:

* **small**: N distinct 64-px PNGs (smooth random pictures) in 100 classes, plus planted copies
  of known pictures: exact copies (the same bytes, same class), near copies (the same picture
  as a quality-90 JPEG, same class) and copies in another class (conflicting labels);
* **photos**: phone-sized JPEGs (4032x3024, ~4 MB each) in 3 classes, and the same photos
  resized beforehand (short side 256 px, quality 90), as a user would prepare them.

Measures, each command in a fresh process (seconds and peak resident memory, ``wait4``):

* small, per size: the cold scan (empty cache) and a warm re-scan (``scan_folder`` in a child
  process: the scan's own seconds, images/s), the grouping of copies on the warm scan,
  ``snugtune doctor DATA --json`` (warm; are the planted copies the groups it finds?) and
  ``snugtune plan DATA --model mobilenet_v2`` (warm);
* photos: the scan, and fine-tuning (``--head-epochs 0``, lite0 at 224 px on the CPU) on the
  photos and on the resized copies, interleaved: the decoded-image store's fill, the first
  epoch and the later epochs; with ``--before SRC`` (a checkout of snugtune before the store)
  the same run on the photos with that code, for "no slower than today's";
* store_format: reading a 258x258 record from the store (raw pixels) against decoding it as a
  quality-90 JPEG (FFCV's two choices), and the bytes of each;
* feature_cache_reuse: two head-only runs on the same 2,000 small images with different
  ``--out``: the second one's feature-cache hits;
* demo_split (``--demo``): ``make demo``'s run with the default split and with
  ``--no-group-split``: copies across the split, and the best validation accuracy.

Usage::

    python benchmarks/data_scale.py --sizes 10000 100000 1000000 --photos 300 \\
        --out benchmarks/results/data_scale.json [--before /tmp/before/src]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _machine import emit, load, machine
from snugtune.data import scan_folder, split_folder, write_animal_mnist
from snugtune.data.doctor import find_copies

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 100
SIDE = 64
PHOTO = (4032, 3024)
PHOTO_CLASSES = 3
RESIZED_SHORT = 256


# ------------------------------------------------------------------ generators


def _picture(i: int) -> np.ndarray:
    """Picture ``i``: 8x8 random colours, smoothly enlarged to 64 px (distinct for each i)."""
    rng = np.random.default_rng(i)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return np.asarray(small.resize((SIDE, SIDE), Image.Resampling.BILINEAR))


def _write_small(args: tuple[str, int, int]) -> None:
    root, start, stop = args
    for i in range(start, stop):
        Image.fromarray(_picture(i)).save(f"{root}/c{i % CLASSES:03d}/{i:07d}.png")


def planted(n: int) -> dict[str, list[int]]:
    """Which pictures get a copy: 0.5% an exact copy, 0.5% a near copy, 0.1% a copy in the
    next class (disjoint sets, spread over the folder)."""
    step = 200
    return {"exact": list(range(0, n, step)), "near": list(range(67, n, step)),
            "other_class": list(range(131, n, 5 * step))}


def make_small(root: Path, n: int, workers: int = 2) -> dict[str, Any]:
    """N distinct 64-px PNGs in 100 classes plus the planted copies; returns the expected
    groups (file names) of copies."""
    for c in range(CLASSES):
        (root / f"c{c:03d}").mkdir(parents=True, exist_ok=True)
    chunk = 2000
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_write_small, [(str(root), s, min(n, s + chunk)) for s in range(0, n, chunk)])
    plant = planted(n)
    groups = []
    for i in plant["exact"]:
        src = root / f"c{i % CLASSES:03d}" / f"{i:07d}.png"
        shutil.copyfile(src, src.with_name(f"{i:07d}_copy.png"))
        groups.append(sorted([src.name, f"{i:07d}_copy.png"]))
    for i in plant["near"]:
        src = root / f"c{i % CLASSES:03d}" / f"{i:07d}.png"
        Image.fromarray(_picture(i)).save(src.with_name(f"{i:07d}_q90.jpg"), quality=90)
        groups.append(sorted([src.name, f"{i:07d}_q90.jpg"]))
    for i in plant["other_class"]:
        src = root / f"c{i % CLASSES:03d}" / f"{i:07d}.png"
        dst = root / f"c{(i + 1) % CLASSES:03d}" / f"{i:07d}_elsewhere.png"
        shutil.copyfile(src, dst)
        groups.append(sorted([src.name, dst.name]))
    files = n + sum(len(v) for v in plant.values())
    return {"files": files, "groups": sorted(groups)}


def _photo(i: int) -> Image.Image:
    """A 12-megapixel 'photo': a smooth scene with fine texture (compresses like a phone's)."""
    rng = np.random.default_rng(10_000 + i)
    w, h = PHOTO
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)
    tint = np.array([[60, 0, 0], [0, 60, 0], [0, 0, 60]][i % PHOTO_CLASSES], dtype=np.int16)
    grain = Image.effect_noise((w // 2, h // 2), 40).resize((w, h), Image.Resampling.BILINEAR)
    pixels = (np.asarray(base, np.int16) + tint + (np.asarray(grain, np.int16)[..., None] - 128)
              // 2)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_photo(args: tuple[str, str, int]) -> int:
    root, resized, i = args
    name = f"c{i % PHOTO_CLASSES}/IMG_{i:04d}.jpg"
    photo = _photo(i)
    photo.save(f"{root}/{name}", quality=92)
    w, h = photo.size
    scale = RESIZED_SHORT / min(w, h)
    photo.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS).save(
        f"{resized}/{name}", quality=90)
    return os.path.getsize(f"{root}/{name}")


def make_photos(root: Path, resized: Path, n: int, workers: int = 2) -> dict[str, Any]:
    for base in (root, resized):
        for c in range(PHOTO_CLASSES):
            (base / f"c{c}").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        sizes = pool.map(_write_photo, [(str(root), str(resized), i) for i in range(n)])
    return {"photos": n, "size_px": list(PHOTO), "mean_bytes": int(np.mean(sizes)),
            "resized_short_side": RESIZED_SHORT}


# ------------------------------------------------------------------ processes


def _env(cache: Path, src: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "SNUGTUNE_CACHE_DIR": str(cache), "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = str(src or ROOT / "src")
    return env


# Forks the command from a small process and reports its rusage: a child forked from this
# process (torch imported, ~1.1 GB resident) would inherit that high-water mark across exec.
_SHIM = """import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\n@rusage " + json.dumps({"maxrss_kb": usage.ru_maxrss}) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(argv: list[str], env: dict[str, str], timeout: float = 7200) -> dict[str, Any]:
    """Run ``argv``: wall seconds, peak RSS (bytes, its own: ``wait4`` in a small parent),
    exit code, stdout (parsed as JSON when it is)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _SHIM, *argv], capture_output=True, text=True,
                       env=env, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    seconds = time.perf_counter() - t0
    head, _, tail = p.stderr.rpartition("\n@rusage ")
    rss_kb = json.loads(tail)["maxrss_kb"] if tail.startswith("{") else 0
    result: dict[str, Any] = {"seconds": round(seconds, 2), "peak_rss_bytes": rss_kb * 1024,
                              "exit_code": p.returncode}
    try:
        result["output"] = json.loads(p.stdout)
    except ValueError:
        result["output_tail"] = p.stdout[-500:]
    if p.returncode != 0:
        result["stderr_tail"] = head[-2000:]
    return result


def snugtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "snugtune", *args]


def child(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args]


def _child_main(argv: list[str]) -> None:
    """In a child process: ``scan DATA`` or ``group DATA``, timed inside, printed as JSON."""
    what, data = argv
    t0 = time.perf_counter()
    scan = scan_folder(data)
    t1 = time.perf_counter()
    out: dict[str, Any] = {"scan_seconds": round(t1 - t0, 2), "images": len(scan.samples),
                           "images_per_s": round(len(scan.samples) / (t1 - t0), 1)}
    if what == "group":
        copies = find_copies(scan.samples)
        t2 = time.perf_counter()
        split_folder(scan, 0.2, 0)
        out.update(grouping_seconds=round(t2 - t1, 2), groups=len(copies),
                   split_seconds=round(time.perf_counter() - t2, 2))
    print(json.dumps(out))


# ------------------------------------------------------------------ measurements


def _found_groups(doctor: dict[str, Any]) -> list[list[str]]:
    return sorted(sorted(Path(f["path"]).name for f in g["files"]) for g in doctor["groups"])


def measure_small(work: Path, n: int) -> dict[str, Any]:
    data, cache = work / f"small_{n}", work / f"cache_{n}"
    t0 = time.perf_counter()
    expected = make_small(data, n)
    out: dict[str, Any] = {"images": n, "files": expected["files"],
                           "planted_groups": len(expected["groups"]),
                           "generate_seconds": round(time.perf_counter() - t0, 1),
                           "load_before": load()}
    env = _env(cache)
    out["cold_scan"] = run(child("scan", str(data)), env)
    out["warm_scan"] = run(child("scan", str(data)), env)
    out["grouping"] = run(child("group", str(data)), env)
    doctor = run(snugtune("doctor", str(data), "--json"), env)
    found = _found_groups(doctor.pop("output")["doctor"]) if doctor["exit_code"] == 0 else []
    doctor.update(groups_found=len(found), planted_found=sum(g in found for g in expected["groups"]),
                  extra_groups=len([g for g in found if g not in expected["groups"]]))
    out["doctor"] = doctor
    plan = run(snugtune("plan", str(data), "--model", "mobilenet_v2", "--json"), env)
    plan.pop("output", None)
    out["plan"] = plan
    out["load_after"] = load()
    out["cache_bytes"] = _du(cache)
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


FINETUNE = ["--model", "tf_efficientnet_lite0", "--res", "224", "--head-epochs", "0",
            "--finetune-epochs", "3", "--finetune-patience", "10", "--batch-size", "32",
            "--no-progress", "--seed", "0"]


def _epochs(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def _train(data: Path, run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    r = run(snugtune("train", str(data), "--out", str(run_dir), *FINETUNE, "--json"), env)
    summary = r.pop("output", None) or {}
    if r["exit_code"] == 0:
        r["epoch_seconds"] = _epochs(run_dir)
        r["best_val_accuracy"] = summary.get("best_val_accuracy")
        r["decoded_images"] = summary.get("decoded_images")  # None: no store (the code before)
    return r


def measure_photos(work: Path, n: int, repeats: int, before: Path | None) -> dict[str, Any]:
    photos, resized = work / "photos", work / "photos_resized"
    t0 = time.perf_counter()
    out: dict[str, Any] = {**make_photos(photos, resized, n),
                           "generate_seconds": round(time.perf_counter() - t0, 1),
                           "config": " ".join(FINETUNE), "load_before": load()}
    cache = work / "cache_photos"
    out["scan"] = run(child("scan", str(photos)), _env(cache))
    runs: dict[str, list[dict[str, Any]]] = {"photos": [], "resized": [], "photos_before": []}
    for k in range(repeats):  # interleaved; each run with an empty cache: a first run
        for name, data, src in (("photos", photos, None), ("resized", resized, None),
                                ("photos_before", photos, before)):
            if name == "photos_before" and before is None:
                continue
            fresh = work / f"cache_{name}_{k}"
            runs[name].append(_train(data, work / f"run_{name}_{k}", _env(fresh, src)))
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.rmtree(work / f"run_{name}_{k}", ignore_errors=True)
    out["runs"] = {k: v for k, v in runs.items() if v}
    out["summary"] = _photo_summary(out["runs"])
    out["load_after"] = load()
    for p in (photos, resized, cache):
        shutil.rmtree(p, ignore_errors=True)
    return out


def _median(xs: list[float]) -> float | None:
    return round(float(np.median(xs)), 2) if xs else None


def _first_pass(r: dict[str, Any]) -> float:
    """The first epoch plus the decoded-image store's fill before it (none for the code
    before the store): what the first pass over the photos costs."""
    fill = (r.get("decoded_images") or {}).get("fill_seconds") or 0.0
    return float(r["epoch_seconds"][0]) + float(fill)


def _photo_summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    done = {k: [r for r in v if r.get("epoch_seconds")] for k, v in runs.items()}
    out: dict[str, Any] = {
        "later_epoch_seconds": {k: _median([s for r in v for s in r["epoch_seconds"][1:]])
                                for k, v in done.items()},
        "first_epoch_seconds": {k: _median([r["epoch_seconds"][0] for r in v])
                                for k, v in done.items()},
        "first_pass_seconds": {k: _median([_first_pass(r) for r in v]) for k, v in done.items()},
        "run_seconds": {k: _median([r["seconds"] for r in v]) for k, v in done.items()}}
    later, first = out["later_epoch_seconds"], out["first_pass_seconds"]
    if later.get("photos") and later.get("resized"):
        out["later_epochs_photos_over_resized"] = round(later["photos"] / later["resized"], 3)
    if first.get("photos") and first.get("photos_before"):
        out["first_pass_now_over_before"] = round(first["photos"] / first["photos_before"], 3)
    if later.get("photos") and later.get("photos_before"):
        out["later_epochs_now_over_before"] = round(later["photos"] / later["photos_before"], 3)
    return out


def measure_store_format(samples: int = 24) -> dict[str, Any]:
    """Raw pixels from a memory map against a quality-90 JPEG, for 258x258 records of the
    generated photos (what lite0 at 224 px stores)."""
    side = 258
    pics = [_photo(i).resize((side, side), Image.Resampling.LANCZOS) for i in range(samples)]
    raw = np.stack([np.asarray(p) for p in pics])
    with tempfile.NamedTemporaryFile() as f:
        f.write(raw.tobytes())
        f.flush()
        mm = np.memmap(f.name, dtype=np.uint8, mode="r", shape=raw.shape)
        t0 = time.perf_counter()
        for _ in range(50):
            for i in range(samples):
                Image.fromarray(np.asarray(mm[i]))
        raw_ms = (time.perf_counter() - t0) / (50 * samples) * 1000
    jpegs = []
    for p in pics:
        buf = io.BytesIO()
        p.save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    t0 = time.perf_counter()
    for _ in range(50):
        for b in jpegs:
            Image.open(io.BytesIO(b)).convert("RGB")
    jpeg_ms = (time.perf_counter() - t0) / (50 * samples) * 1000
    return {"side": side, "raw_read_ms": round(raw_ms, 4), "jpeg_q90_decode_ms": round(jpeg_ms, 3),
            "raw_bytes": side * side * 3, "jpeg_q90_mean_bytes": int(np.mean([len(b) for b in jpegs])),
            "photo_decode_ms": _photo_decode_ms()}


def _photo_decode_ms() -> dict[str, float]:
    """What one generated 12-MP photo costs to decode: in full, and in draft mode at the
    scale the store (258 px) and the scan (32 px) ask for: both get 1/8."""
    buf = io.BytesIO()
    _photo(0).save(buf, format="JPEG", quality=92)
    out = {}
    for name, draft in (("full", None), ("draft_258", 258), ("draft_32", 32)):
        t0 = time.perf_counter()
        for _ in range(5):
            im = Image.open(io.BytesIO(buf.getvalue()))
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()
        out[name] = round((time.perf_counter() - t0) / 5 * 1000, 1)
    return out


def measure_feature_reuse(work: Path, n: int = 2000) -> dict[str, Any]:
    data, cache = work / "reuse", work / "cache_reuse"
    make_small(data, n)
    args = ["--head-epochs", "1", "--finetune-epochs", "0", "--no-progress", "--json"]
    out = {}
    for name in ("first", "second"):
        r = run(snugtune("train", str(data), "--out", str(work / f"run_{name}"), *args), _env(cache))
        summary = r.pop("output", None) or {}
        cache_info = (summary.get("phases") or [{}])[0].get("feature_cache") or {}
        r.update({k: cache_info.get(k) for k in ("hits", "misses", "hit_rate", "fill_seconds")})
        r["images"] = summary.get("num_train", 0) + summary.get("num_val", 0)
        out[name] = r
        shutil.rmtree(work / f"run_{name}", ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def measure_demo_split(work: Path) -> dict[str, Any]:
    """``make demo``'s run (Animal-MNIST, defaults) with the default split, which keeps each
    group of copies on one side, and with ``--no-group-split`` (the plain split, as before
    the group split): the doctor's counts and the best validation accuracy of each."""
    data, cache = write_animal_mnist(work / "animal_mnist"), work / "cache_demo"
    out: dict[str, Any] = {"data": "Animal-MNIST, 10 x 1,000 28x28 PNG, defaults (make demo)"}
    for name, flags in (("group_split", []), ("plain_split", ["--no-group-split"])):
        doctor = run(snugtune("doctor", str(data), "--json", *flags), _env(cache))
        found = (doctor.pop("output", None) or {}).get("doctor", {})
        trained = run(snugtune("train", str(data), "--out", str(work / f"run_{name}"),
                               "--no-progress", "--json", *flags), _env(cache))
        summary = trained.pop("output", None) or {}
        out[name] = {"counts": found.get("counts"), "kept_together": found.get("kept_together"),
                     "best_val_accuracy": summary.get("best_val_accuracy"),
                     "num_val": summary.get("num_val"), "train": trained,
                     "doctor_seconds": doctor["seconds"]}
        shutil.rmtree(work / f"run_{name}", ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    p.add_argument("--photos", type=int, default=300, help="phone photos (0: skip)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved training runs per side")
    p.add_argument("--before", type=Path, help="src/ of snugtune before the decoded-image store")
    p.add_argument("--work", type=Path, help="folder for the generated data (default: a temp dir)")
    p.add_argument("--skip", nargs="*", default=[], choices=["store_format", "feature_reuse"])
    p.add_argument("--demo", action="store_true",
                   help="also train make demo's run with and without the group split (~6 min)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snugtune-scale-", dir=args.work))
    report: dict[str, Any] = {"benchmark": "data_scale", "machine": machine(), "load": load()}
    try:
        if "store_format" not in args.skip:
            report["store_format"] = measure_store_format()
        if "feature_reuse" not in args.skip:
            report["feature_cache_reuse"] = measure_feature_reuse(work)
        report["small"] = [measure_small(work, n) for n in args.sizes]
        if args.photos:
            report["photos"] = measure_photos(work, args.photos, args.repeats, args.before)
        if args.demo:
            report["demo_split"] = measure_demo_split(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(report, args.out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child_main(sys.argv[2:])
    else:
        main()
