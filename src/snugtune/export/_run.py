"""``export_run``: write a finished run's model in a deployment format, check it, card it."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from snugtune._files import file_sha256
from snugtune.data import Sample, load_image
from snugtune.export._formats import CHECKERS, INPUT, OUTPUT, WRITERS, ExportError
from snugtune.report import write_model_card

__all__ = ["DEFAULT_NAMES", "FORMATS", "TOLERANCE", "ExportResult", "card_path_for", "export_run"]

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "safetensors")
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt",
                 "safetensors": "model.safetensors"}
TOLERANCE = 1e-4  # max |logit difference| an export may show against PyTorch
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


def card_path_for(model_path: str | Path) -> Path:
    """The model card beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, *,
               check_images: int = CHECK_IMAGES) -> ExportResult:
    """Export the trained model of ``run_dir`` as ``fmt`` and check it against PyTorch.

    The file is written in a staging folder beside its destination, loaded back (onnxruntime for ONNX,
    ``torch.jit.load``, safetensors) and run on up to ``check_images`` of the run's validation
    images, preprocessed as at inference, as one batch and as a batch of 1 (the batch axis is
    dynamic). Only when the largest logit difference is within ``TOLERANCE`` are the file and
    its model card (``card_path_for``) moved into place.

    Args:
        run_dir: a finished run.
        fmt: one of ``FORMATS``.
        out: the file to write; default ``RUN/export/`` + ``DEFAULT_NAMES[fmt]``.
        check_images: real inputs for the check.

    Raises:
        ExportError: unknown format, a writer failed, or the export does not match.
        CheckpointError: the run has no finished model.
    """
    from snugtune.train.inference import load_run

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    path = Path(out) if out else run_dir / "export" / DEFAULT_NAMES[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    model, card = load_run(run_dir, "cpu")
    model.set_checkpointing(())  # plain forward: nothing to trace through
    model = model.to(memory_format=torch.contiguous_format).float().eval()
    batches, source = check_inputs(run_dir, card["preprocessing"], check_images)
    info, worst = _write_checked(fmt, model, batches, path, f"{source} images of {run_dir}")
    result = ExportResult(path, card_path_for(path), fmt, worst, int(batches[0].shape[0]), source)
    _write_card(result, card, info, path, num_classes=int(card["num_classes"]))
    log.info("exported %s (%s); max |logit difference| vs PyTorch %.2g on %d %s images",
             path, fmt, worst, result.checked_on, source)
    return result


def _write_checked(fmt: str, model: torch.nn.Module, batches: list[Tensor], path: Path,
                   what: str) -> tuple[dict[str, Any], float]:
    """Write into a staging folder, check, and only then move into place: (info, max diff)."""
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp = staging / path.name  # the final name, so an ONNX file's external-data reference holds
    try:
        staging.mkdir()
        info = _write(fmt, model, batches[0], tmp)
        worst = CHECKERS[fmt](tmp, model, batches)
        if not worst <= TOLERANCE:
            raise ExportError(f"{fmt} export differs from PyTorch by {worst:.3g} (> {TOLERANCE:g}) "
                              f"on {len(batches[0])} {what}; nothing written. Try another "
                              "--format, or report the model name")
        _publish(staging, path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info, worst


def _write(fmt: str, model: torch.nn.Module, example: Tensor, tmp: Path) -> dict[str, Any]:
    try:
        return WRITERS[fmt](model, example, tmp)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - exporters raise anything; say which and why
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportError(f"{fmt} export failed ({type(e).__name__}: {first}); "
                          "try --format torchscript or safetensors") from e


def _publish(staging: Path, dest: Path) -> None:
    """Move the checked file(s) into place (a large ONNX model's weights are in
    ``<file>.data`` beside it), with normal permissions: writers may create 0600 files."""
    mask = os.umask(0)
    os.umask(mask)
    for f in staging.iterdir():
        os.chmod(f, 0o666 & ~mask)
        os.replace(f, dest / f.name)


def check_inputs(run_dir: Path, pre: Mapping[str, Any], n: int) -> tuple[list[Tensor], str]:
    """Preprocessed real images of the run (validation split first) as [batch of up to
    ``n``, batch of 1]; random normal inputs, with a warning, when none can be read."""
    from snugtune.train.inference import eval_transform
    from snugtune.train.setup import load_split

    split = load_split(run_dir) or ((), ())
    tf, size = eval_transform(pre), int(pre["size"])
    for samples, source in ((split[1], "validation split"), (split[0], "training split")):
        images = _load_some(samples, tf, size, n)
        if images:
            x = torch.stack(images)  # (B, 3, H, W)
            return [x, x[:1]], source
    log.warning("no image of %s could be read here: checking the export on random inputs", run_dir)
    x = torch.randn(max(2, min(n, 8)), 3, size, size, generator=torch.Generator().manual_seed(0))
    return [x, x[:1]], "random"


def _load_some(samples: Sequence[Sample], tf: Any, size: int, n: int) -> list[Tensor]:
    out: list[Tensor] = []
    for s in samples:
        if len(out) >= n:
            break
        try:
            out.append(tf(load_image(s.path, draft_size=size)))
        except Exception as e:  # noqa: BLE001 - a moved or damaged file: try the next one
            log.debug("export check: skipping %s (%s)", s.path, e)
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
