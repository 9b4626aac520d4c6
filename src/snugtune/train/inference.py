"""Use a trained run: load it, evaluate it on a folder, predict files."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from snugtune.config import AugmentConfig
from snugtune.data import (
    IMAGE_EXTENSIONS,
    ImageDataset,
    ImageLoadError,
    Sample,
    build_transforms,
    make_loader,
    scan_folder,
)
from snugtune.errors import CheckpointError, DataError
from snugtune.models import Classifier, build_classifier
from snugtune.report import ClassificationReport, classification_report, read_model_card
from snugtune.train.loop import MicroBatch, StepContext, evaluate
from snugtune.train.peak import PeakMeter

__all__ = ["Prediction", "eval_transform", "evaluate_run", "load_run", "predict", "predict_samples"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image."""

    path: str
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "top": [{"label": lab, "probability": p}
                                           for lab, p in zip(self.labels, self.probabilities, strict=True)]}


def eval_transform(pre: Mapping[str, Any]) -> Any:
    """PIL image -> (3, S, S) normalised tensor, from a model card's ``preprocessing``."""
    return build_transforms(AugmentConfig(), size=int(pre["size"]), mean=pre["mean"], std=pre["std"],
                            train=False, interpolation=str(pre.get("interpolation", "bilinear")))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The trained classifier of a run (eval mode) and its model card.

    Raises:
        CheckpointError: the run has no finished model.
    """
    run_dir = Path(run_dir)
    card_path, weights = run_dir / "model_card.json", run_dir / "model.safetensors"
    if not card_path.exists() or not weights.exists():
        raise CheckpointError(f"{run_dir} holds no finished model (model_card.json + "
                              "model.safetensors); finish it with snugtune train --resume")
    card: dict[str, Any] = dict(read_model_card(card_path))
    head = card.get("head") or {}
    model = build_classifier(str(card.get("model") or card["backbone"]), int(card["num_classes"]),
                             weights="none", head_hidden=head.get("hidden"),
                             head_dropout=float(head.get("dropout", 0.0)))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval(), card


def predict_samples(
    model: Classifier, samples: Sequence[Sample], pre: Mapping[str, Any], *,
    device: torch.device | str = "cpu", batch_size: int = 64, workers: int | None = None,
    gpu_memory: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(N, C) probabilities and (N,) labels over ``samples``.

    Batches that run out of memory are halved and retried; ``gpu_memory`` (bytes) enforces a
    budget as training does (``train/peak.py``: the CUDA allocator capped, or the CPU's
    virtual device).
    """
    dev = torch.device(device)
    ds = ImageDataset(samples, eval_transform(pre), draft_size=int(pre["size"]))
    loader = make_loader(ds, batch_size=batch_size, workers=workers, device=dev.type)
    ctx = StepContext(device=dev, num_classes=model.head.num_classes)
    micro = MicroBatch(batch_size)
    with PeakMeter(dev, budget_bytes=gpu_memory):
        _, probs, labels = evaluate(model, iter(loader), ctx, micro)
    if micro.size < batch_size:
        log.info("evaluated %d images at most %d at a time (the budget)", len(ds), micro.size)
    return probs, labels


def evaluate_run(
    run_dir: str | Path, data: str | Path | None = None, *, device: str = "cpu",
    batch_size: int = 64, workers: int | None = None, gpu_memory: int | None = None,
) -> ClassificationReport:
    """Accuracy, per-class precision/recall/F1 and confusion matrix of a run.

    ``data`` None evaluates the run's own held-out validation split; otherwise a class-folder
    tree whose class names must be among the run's classes. ``gpu_memory``: a memory budget
    in bytes (see ``predict_samples``).
    """
    from snugtune.train.setup import load_split

    model, card = load_run(run_dir, device)
    classes = list(card["classes"])
    if data is None:
        split = load_split(Path(run_dir))
        if split is None or not split[1]:
            raise DataError(f"{run_dir} has no validation split; pass a DATA folder to evaluate on")
        samples: Sequence[Sample] = split[1]
    else:
        samples = _samples_by_name(data, classes)
    probs, labels = predict_samples(model, samples, card["preprocessing"], device=device,
                                    batch_size=batch_size, workers=workers, gpu_memory=gpu_memory)
    return classification_report(labels.tolist(), probs.argmax(-1).tolist(), classes)


def _samples_by_name(data: str | Path, classes: list[str]) -> list[Sample]:
    scan = scan_folder(data)
    unknown = [c for c in scan.classes if c not in classes]
    if unknown:
        raise DataError(f"{data}: classes {unknown} were not trained (the run knows {classes}); "
                        "evaluate on a folder with the same class names")
    pool = list(scan.samples) + list(scan.val_samples or ())
    return [Sample(path=s.path, label=classes.index(scan.classes[s.label])) for s in pool]


def predict(run_dir: str | Path, files: Sequence[str | Path], *, top_k: int = 1,
            device: str = "cpu", batch_size: int = 64,
            gpu_memory: int | None = None) -> list[Prediction]:
    """Top-k predictions for each image file (a bad file raises ``DataError`` naming it).

    A folder in ``files`` stands for the image files under it (sorted; hidden entries skipped).

    Files are classified in batches, under the same budget guard as ``evaluate_run``
    (``gpu_memory`` in bytes; see ``predict_samples``). ``run_dir`` may also be an exported
    ``.onnx`` file with its card ``FILE.onnx.json`` beside it: onnxruntime then runs it on
    the CPU (``device``, ``batch_size`` and ``gpu_memory`` are ignored).
    """
    from snugtune.export import OnnxModel, is_onnx_model

    if is_onnx_model(run_dir):  # the model is checked before the files
        onnx = OnnxModel(run_dir)
        return list(onnx.predict(_image_files(files), top_k=top_k))
    model, card = load_run(run_dir, device)
    classes = list(card["classes"])
    samples = [Sample(path=f, label=0) for f in _image_files(files)]
    # No worker processes: a file that cannot be read raises its own one-line DataError here
    # (a worker would re-raise it wrapped in its traceback).
    try:
        probs, _ = predict_samples(model, samples, card["preprocessing"], device=device,
                                   batch_size=batch_size, workers=0, gpu_memory=gpu_memory)
    except ImageLoadError as e:  # its own text is about training, which skips such files
        raise DataError(f"cannot classify {e.path!r}: {e.reason}") from None
    top = probs.topk(max(1, min(top_k, len(classes))), dim=-1)
    return [Prediction(s.path, tuple(classes[i] for i in idx), tuple(float(v) for v in val))
            for s, idx, val in zip(samples, top.indices.tolist(), top.values.tolist(), strict=True)]


def _image_files(paths: Sequence[str | Path]) -> list[str]:
    """``paths`` with each folder replaced by the image files under it (sorted, recursive,
    hidden entries skipped).

    Raises:
        DataError: a path does not exist, or a folder holds no image file.
    """
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise DataError(f"{str(p)!r} holds no image files (.jpg, .png, .webp, ...)")
            out += found
        elif not p.exists():
            raise DataError(f"{str(p)!r} does not exist; pass image files or folders of them")
        else:
            out.append(str(p))
    return out
