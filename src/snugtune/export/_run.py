"""``export_run``: write a finished run's model in a deployment format, check it, card it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from snugtune.config import EXPORT_FORMATS as FORMATS
from snugtune.data import eval_transform, load_image
from snugtune.errors import ExportError
from snugtune.export._formats import CHECKERS, INPUT, OUTPUT, TOLERANCE, WRITERS
from snugtune.export._readme import hub_readme
from snugtune.export._timm import WEIGHTS
from snugtune.infer import load_run
from snugtune.report import write_model_card
from snugtune.rundir import RunDir, atomic_write, card_path_for, file_sha256

__all__ = ["DEFAULT_NAMES", "FORMATS", "TOLERANCE", "ExportResult", "export_run"]

log = logging.getLogger(__name__)

DEFAULT_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2", "safetensors": "model.safetensors",
                 "timm": "timm"}
FOLDERS = ("timm",)  # formats that write a folder; its model.safetensors is published last
README = "README.md"  # a folder's model card (Hugging Face's)
CHECK_IMAGES = 16  # real images the check runs (batch of all, then batch of 1)
_RESERVED = {"format", "format_version", "backbone", "num_classes", "classes", "preprocessing",
             "metrics", "snugtune_version", "torch_version", "created_utc"}


@dataclass(frozen=True)
class ExportResult:
    """What ``export_run`` wrote and how well it matches PyTorch."""

    path: Path
    card_path: Path
    format: str
    max_abs_diff: float
    checked_on: int  # inputs the check ran
    inputs_source: str  # "validation split", "training split" or "random"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "card": str(self.card_path), "format": self.format,
                "max_abs_diff": self.max_abs_diff, "tolerance": TOLERANCE,
                "checked_on": self.checked_on, "inputs": self.inputs_source}


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, *,
               check_images: int = CHECK_IMAGES) -> ExportResult:
    """Export the trained model of ``run_dir`` as ``fmt`` and check it against PyTorch.

    The file is written in a staging folder beside its destination, loaded back (onnxruntime for
    ONNX, ``torch.export.load``, safetensors, timm's ``local-dir:``) and run on up to
    ``check_images`` of the run's validation images, preprocessed as at inference, as one batch
    and as a batch of 1 (the batch axis is dynamic). Only when the largest logit difference is
    within ``TOLERANCE`` are the file and its model card (``card_path_for``) moved into place.
    ``timm`` writes a folder (``config.json``, ``model.safetensors``, and ``README.md``, its model
    card), each file replaced atomically, the weights last (see ``export._timm``).

    Args:
        run_dir: a finished run.
        fmt: one of ``FORMATS``.
        out: the file (timm: the folder) to write; default ``RUN/export/`` +
            ``DEFAULT_NAMES[fmt]``.
        check_images: real inputs for the check.

    Raises:
        ExportError: unknown format, a writer failed, the export does not match, or timm cannot
            express the model.
        CheckpointError: the run has no finished model.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run = RunDir(run_dir)
    path = Path(out) if out else run.export_path(DEFAULT_NAMES[fmt])
    folder = fmt in FOLDERS
    if folder and path.exists() and not path.is_dir():
        raise ExportError(f"--output {path} is a file; --format {fmt} writes a folder: "
                          "give a folder's path")
    model, card = load_run(run.path, "cpu")
    model.set_checkpointing(())  # plain forward: nothing to trace through
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    batches, source = check_inputs(run, card["preprocessing"], check_images)
    finish = _readme_writer(card, run, path, len(batches[0]), source) if folder else None
    created = folder and not path.exists()
    try:
        info, worst = _write_checked(fmt, model, card, batches, path / WEIGHTS if folder else path,
                                     f"{source} images of {run.path}", finish)
    except BaseException:
        if created:  # a refused or failed folder export leaves no empty folder behind
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    card_path = path / README if folder else card_path_for(path)
    result = ExportResult(path, card_path, fmt, worst, int(batches[0].shape[0]), source)
    if not folder:
        _write_card(result, card, info, path, num_classes=int(card["num_classes"]))
    log.info("exported %s (%s); max |logit difference| vs PyTorch %.2g on %d %s images",
             path, fmt, worst, result.checked_on, source)
    return result


Finish = Callable[[Path, Mapping[str, Any], float], None]  # (staged file, writer's info, max diff)


def _write_checked(fmt: str, model: torch.nn.Module, card: Mapping[str, Any],
                   batches: list[Tensor], path: Path, what: str,
                   finish: Finish | None = None) -> tuple[dict[str, Any], float]:
    """Write, check, ``finish`` (files to stage beside it), and only then publish (the one atomic
    writer): (info, max diff)."""
    done: dict[str, Any] = {}

    def write_and_check(tmp: Path) -> None:
        done["info"] = _write(fmt, model, batches[0], tmp, card)
        done["worst"] = worst = CHECKERS[fmt](tmp, model, batches)
        if not worst <= TOLERANCE:
            raise ExportError(f"{fmt} export differs from PyTorch by {worst:.3g} (> {TOLERANCE:g}) "
                              f"on {len(batches[0])} {what}; nothing written. Try another "
                              "--format, or report the model name")
        if finish is not None:
            finish(tmp, done["info"], worst)

    atomic_write(path, write_and_check)
    return done["info"], float(done["worst"])


def _readme_writer(card: Mapping[str, Any], run: RunDir, folder: Path, checked_on: int,
                   source: str) -> Finish:
    """Stages the folder's ``README.md`` (the Hub's model card) once the check passed."""

    def write(tmp: Path, info: Mapping[str, Any], worst: float) -> None:
        check = {"max_abs_diff": worst, "tolerance": TOLERANCE, "checked_on": checked_on,
                 "inputs": source}
        (tmp.parent / README).write_text(hub_readme(card, run, folder, info, check),
                                         encoding="utf-8")

    return write


def _write(fmt: str, model: torch.nn.Module, example: Tensor, tmp: Path,
           card: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return WRITERS[fmt](model, example, tmp, card)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - exporters raise anything; say which and why
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"{fmt} export failed ({type(e).__name__}: {first}); "
                          "try --format pt2 or safetensors") from e


def check_inputs(run: RunDir, pre: Mapping[str, Any], n: int) -> tuple[list[Tensor], str]:
    """Preprocessed real images of the run (validation split first) as [batch of up to
    ``n``, batch of 1]; random normal inputs, with a warning, when none can be read."""
    split = run.read_split() or ([], [])
    tf, size = eval_transform(pre), int(pre["size"])
    for samples, source in ((split[1], "validation split"), (split[0], "training split")):
        images = _load_some(samples, tf, size, n)
        if images:
            x = torch.stack(images)  # (B, 3, H, W)
            return [x, x[:1]], source
    log.warning("no image of %s could be read here: checking the export on random inputs", run.path)
    x = torch.randn(max(2, min(n, 8)), 3, size, size, generator=torch.Generator().manual_seed(0))
    return [x, x[:1]], "random"


def _load_some(samples: Sequence[tuple[str, int]], tf: Any, size: int, n: int) -> list[Tensor]:
    out: list[Tensor] = []
    for path, _ in samples:
        if len(out) >= n:
            break
        try:
            out.append(tf(load_image(path, draft_size=size)))
        except Exception as e:  # noqa: BLE001 - a moved or damaged file: try the next one
            log.debug("export check: skipping %s (%s)", path, e)
    return out


def _write_card(result: ExportResult, card: Mapping[str, Any], info: Mapping[str, Any],
                path: Path, *, num_classes: int) -> None:
    pre = dict(card["preprocessing"])
    size = int(pre["size"])
    export = {
        "format": result.format, "file": path.name, "sha256": file_sha256(path), **info,
        "input": {"name": INPUT, "shape": ["batch", 3, size, size], "dtype": "float32",
                  "layout": "NCHW"},
        "output": {"name": OUTPUT, "shape": ["batch", num_classes],
                   "meaning": "logits; softmax gives class probabilities in 'classes' order"},
        "pipeline": ["decode, convert to RGB, apply EXIF orientation",
                     f"resize to {size}x{size} ({pre.get('interpolation', 'bilinear')}, antialiased)",
                     "scale to float32 in [0, 1]", "normalise per channel: (x - mean) / std",
                     "stack as (batch, 3, H, W)"],
        "check": {k: v for k, v in result.to_dict().items() if k not in ("path", "card", "format")},
    }
    extra = {k: v for k, v in card.items() if k not in _RESERVED and k != "weights"}
    if result.format == "safetensors":  # the card then rebuilds the model like a run's card
        extra["weights"] = path.name
    extra["export"] = export
    write_model_card(result.card_path, backbone=str(card["backbone"]), classes=list(card["classes"]),
                     preprocessing=pre, metrics=dict(card.get("metrics") or {}), extra=extra)
