"""Use a trained run: load it, classify images, evaluate it on a folder."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from snugtune.config import DEFAULT_BATCH_SIZE
from snugtune.data import (
    DecodedImages,
    ImageDataset,
    LabelsSpec,
    Sample,
    decode_once,
    eval_transform,
    make_loader,
    saved_samples,
    scan_folder,
)
from snugtune.errors import CheckpointError, DataError, ImageLoadError
from snugtune.infer.onnx import OnnxModel, is_onnx_model
from snugtune.infer.predictions import Prediction, image_files, top_k_predictions
from snugtune.infer.tta import (
    VIEWS,
    FlipInput,
    TTAReport,
    average_views,
    view_inputs,
    view_transform,
)
from snugtune.memory import PeakMeter, probe
from snugtune.models import Classifier, build_classifier
from snugtune.report import ClassificationReport, classification_report, read_model_card
from snugtune.rundir import RunDir
from snugtune.step import (
    StepContext,
    eval_micro_batch,
    evaluate,
    keep_freed_memory,
    resolve_device,
)
from snugtune.store import DataIndex

__all__ = ["evaluate_run", "load_run", "predict", "predict_samples", "predict_views",
           "training_limits"]

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """The trained classifier of a run (eval mode) and its model card.

    Raises:
        CheckpointError: the run has no finished model.
    """
    run = RunDir(run_dir)
    if not run.card.exists() or not run.weights.exists():
        raise CheckpointError(f"{run.path} holds no finished model (model_card.json + "
                              "model.safetensors); finish it with snugtune train --resume")
    card: dict[str, Any] = dict(read_model_card(run.card))
    head = card.get("head") or {}
    model = build_classifier(str(card.get("model") or card["backbone"]), int(card["num_classes"]),
                             weights="none", head_hidden=head.get("hidden"),
                             head_dropout=float(head.get("dropout", 0.0)),
                             pre_logits=bool(card.get("pre_logits", False)))
    model.load_state_dict(load_file(str(run.weights)))
    return model.to(device).eval(), card


def predict_samples(
    model: Classifier, samples: Sequence[Sample], pre: Mapping[str, Any], *,
    device: torch.device | str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
    gpu_memory: int | None = None, tta: bool = False, decoded: DecodedImages | None = None,
    micro_batch: int | None = None, context_bytes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(N, C) probabilities and (N,) labels over ``samples`` (their images read from
    ``decoded``, the decoded-image store's view of them, where it holds them).

    Batches that run out of memory are halved and retried; ``gpu_memory`` (bytes) enforces a
    budget as training does (``memory.PeakMeter``: the CUDA allocator capped at it less
    ``context_bytes``, by default the measured context and kernels; or the CPU's virtual
    device). ``micro_batch``: images per forward pass to start at (default: the batch, at most
    ``step.CPU_FORWARD_CHUNK`` on the CPU). ``tta``: the probabilities are the mean over the
    test-time views of ``predict_views`` (see ``snugtune.infer.tta``).
    """
    if tta:
        views, labels = predict_views(model, samples, pre, device=device, batch_size=batch_size,
                                      workers=workers, gpu_memory=gpu_memory, decoded=decoded,
                                      micro_batch=micro_batch, context_bytes=context_bytes)
        return average_views(views), labels
    dev = torch.device(device)
    ds = ImageDataset(samples, eval_transform(pre), draft_size=int(pre["size"]), decoded=decoded)
    loader = make_loader(ds, batch_size=batch_size, workers=workers, device=dev.type)
    ctx = StepContext(device=dev, num_classes=model.head.num_classes)
    with _guard(dev, gpu_memory, context_bytes):
        _, probs, labels, micro = evaluate(model, loader, ctx,
                                           eval_micro_batch(dev, micro_batch or batch_size))
    if micro.recoveries:
        log.info("evaluated %d images at most %d at a time (the budget)", len(ds), micro.size)
    return probs, labels


def predict_views(
    model: Classifier, samples: Sequence[Sample], pre: Mapping[str, Any], *,
    device: torch.device | str = "cpu", batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
    gpu_memory: int | None = None, decoded: DecodedImages | None = None,
    micro_batch: int | None = None, context_bytes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(V, N, C) probabilities of each test-time view (``tta.VIEWS`` order) and (N,) labels.

    Each image is decoded once (``tta.view_transform``: its plain and zoomed inputs); each
    loaded batch then runs view after view through the model, a flipped view flipped inside
    the forward pass (``tta.FlipInput``, per micro-batch). A forward pass thus holds no more
    images than ``predict_samples`` without TTA, under the same budget guard, and the
    micro-batch that out-of-memory halving settles on carries over from view to view. View 0
    (``plain``) is exactly ``predict_samples`` without TTA. (On the CPU, whose budget counts
    every tensor, the loaded batches hold two inputs per image.) ``micro_batch`` and
    ``context_bytes``: as for ``predict_samples``.
    """
    dev = torch.device(device)
    ds = ImageDataset(samples, view_transform(pre), draft_size=int(pre["size"]), decoded=decoded)
    loader = make_loader(ds, batch_size=batch_size, workers=workers, device=dev.type)
    ctx = StepContext(device=dev, num_classes=model.head.num_classes)
    models = (model, FlipInput(model))
    micro = eval_micro_batch(dev, micro_batch or batch_size)
    probs: list[list[Tensor]] = [[] for _ in VIEWS]
    labels: list[Tensor] = []
    with _guard(dev, gpu_memory, context_bytes):
        for x, y in loader:
            for i, (src, flipped) in enumerate(view_inputs(x)):
                _, p, _, micro = evaluate(models[flipped], [(src, y)], ctx, micro)
                probs[i].append(p)
            labels.append(y)
            del x, src, p  # no input of this batch is held while the next one loads
    if micro.recoveries:
        log.info("evaluated %d images at most %d at a time (the budget)", len(ds), micro.size)
    if not labels:
        return torch.empty(len(VIEWS), 0, ctx.num_classes), torch.empty(0, dtype=torch.long)
    return torch.stack([torch.cat(p) for p in probs]), torch.cat(labels)


def training_limits(run: RunDir, dev: torch.device,
                    gpu_memory: int | None) -> tuple[int | None, int | None]:
    """The budget and the images per forward pass that inference of a run starts from:
    ``gpu_memory``, else the budget the run trained under (``--gpu-memory``); the micro-batch
    its last phase ended at, when it trained on this kind of device (an inference forward pass
    needs less than the training step that fitted at that size)."""
    if gpu_memory is None and run.config.exists():
        gpu_memory = run.read_config().gpu_memory
    summary = run.read_json(run.summary) or {}
    phases = [p for p in summary.get("phases", []) if p.get("micro_batch")]
    micro = int(phases[-1]["micro_batch"]) if phases and summary.get("device") == dev.type else None
    return gpu_memory, micro


def _guard(dev: torch.device, gpu_memory: int | None, context_bytes: int | None) -> PeakMeter:
    """The budget guard of inference on ``dev`` (``gpu_memory`` None: measure only). On CUDA
    the allocator gets the budget less ``context_bytes``; by default what training counts:
    the measured context and the convolution kernels a network loads."""
    if context_bytes is None:
        context_bytes = probe(dev).profile().process_context_bytes \
            if dev.type == "cuda" and gpu_memory else 0
    return PeakMeter(dev, budget_bytes=gpu_memory, context_bytes=context_bytes)


def evaluate_run(
    run_dir: str | Path, data: str | Path | None = None, *, device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, gpu_memory: int | None = None,
    tta: bool = False,
) -> ClassificationReport:
    """Accuracy, per-class precision/recall/F1 and confusion matrix of a run.

    ``data`` None evaluates the run's own held-out validation split; otherwise a class-folder
    tree whose class names must be among the run's classes. ``gpu_memory``: a memory budget
    in bytes (see ``predict_samples``). ``tta``: score the mean over the test-time views
    (``snugtune.infer.tta``) and return a ``TTAReport``, whose ``without_tta`` is the report
    of the plain view (the same images, without TTA). Without ``gpu_memory``, the budget the
    run trained under holds (see ``training_limits``).
    """
    dev = resolve_device(device)
    keep_freed_memory(dev)  # forward passes free their activations too
    model, card = load_run(run_dir, dev)
    gpu_memory, micro = training_limits(RunDir(run_dir), dev, gpu_memory)
    classes = list(card["classes"])
    decoded: DecodedImages | None = None
    if data is None:
        samples, decoded = _validation_split(RunDir(run_dir), int(card["preprocessing"]["size"]))
    else:
        samples = _samples_by_name(data, classes)
    if not tta:
        probs, labels = predict_samples(model, samples, card["preprocessing"], device=dev,
                                        batch_size=batch_size, workers=workers,
                                        gpu_memory=gpu_memory, decoded=decoded, micro_batch=micro)
        return classification_report(labels.tolist(), probs.argmax(-1).tolist(), classes)
    views, labels = predict_views(model, samples, card["preprocessing"], device=dev,
                                  batch_size=batch_size, workers=workers, gpu_memory=gpu_memory,
                                  decoded=decoded, micro_batch=micro)
    with_tta = classification_report(labels.tolist(), average_views(views).argmax(-1).tolist(), classes)
    plain = classification_report(labels.tolist(), views[0].argmax(-1).tolist(), classes)
    return TTAReport(accuracy=with_tta.accuracy, per_class=with_tta.per_class,
                     confusion=with_tta.confusion, classes=with_tta.classes, without_tta=plain)


def _validation_split(run: RunDir, size: int) -> tuple[list[Sample], DecodedImages | None]:
    """The run's validation samples, with their images from the decoded-image store: the run's
    data folder is scanned through the data index (a file changed since is read as it is now),
    and the store gets what it lacks. Without the folder, the files of ``split.json``."""
    split = run.read_split()
    if split is None or not split[1]:
        raise DataError(f"{run.path} has no validation split; pass a DATA folder to evaluate on")
    cfg = run.read_config()
    try:
        with DataIndex.at(cfg.cache_dir) as index:
            scan = scan_folder(cfg.data, labels=LabelsSpec(cfg.labels, cfg.path_column,
                                                           cfg.label_column),
                               workers=cfg.workers, index=index)
            val = saved_samples(scan, split[1])  # no copies to find: the split is saved
            images = decode_once(val, index, size, workers=cfg.workers)
            return list(val), images.view(val) if images is not None else None
    except DataError as e:  # the folder moved or changed shape: the listed files, decoded
        log.info("evaluating the files of %s without the data index (%s)", run.split, e)
        return [Sample(path=p, label=k) for p, k in split[1]], None


def _samples_by_name(data: str | Path, classes: list[str]) -> list[Sample]:
    scan = scan_folder(data)
    unknown = [c for c in scan.classes if c not in classes]
    if unknown:
        raise DataError(f"{data}: classes {unknown} were not trained (the run knows {classes}); "
                        "evaluate on a folder with the same class names")
    pool = list(scan.samples) + list(scan.val_samples or ())
    return [Sample(path=s.path, label=classes.index(scan.classes[s.label])) for s in pool]


def predict(run_dir: str | Path, files: Sequence[str | Path], *, top_k: int = 1,
            device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
            gpu_memory: int | None = None, tta: bool = False) -> list[Prediction]:
    """Top-k predictions for each image file (a bad file raises ``DataError`` naming it).

    A folder in ``files`` stands for the image files under it (sorted; hidden entries skipped).
    Files are classified in batches, under the same budget guard as ``evaluate_run``
    (``gpu_memory`` in bytes; see ``predict_samples``). ``run_dir`` may also be an exported
    ``.onnx`` file with its card ``FILE.onnx.json`` beside it: onnxruntime then runs it on the
    CPU (``device`` and ``gpu_memory`` do not apply). ``tta``: the probabilities are the mean
    over the test-time views (``snugtune.infer.tta``), in both paths.
    """
    if is_onnx_model(run_dir):  # the model is checked before the files
        return OnnxModel(run_dir).predict(image_files(files), top_k=top_k, batch_size=batch_size,
                                          tta=tta)
    dev = resolve_device(device)
    keep_freed_memory(dev)  # forward passes free their activations too
    model, card = load_run(run_dir, dev)
    gpu_memory, micro = training_limits(RunDir(run_dir), dev, gpu_memory)
    classes = list(card["classes"])
    samples = [Sample(path=f, label=0) for f in image_files(files)]
    # No worker processes: a file that cannot be read raises its own one-line DataError here
    # (a worker would re-raise it wrapped in its traceback).
    try:
        probs, _ = predict_samples(model, samples, card["preprocessing"], device=dev,
                                   batch_size=batch_size, workers=0, gpu_memory=gpu_memory, tta=tta,
                                   micro_batch=micro)
    except ImageLoadError as e:  # its own text is about training, which skips such files
        raise DataError(f"cannot classify {e.path!r}: {e.reason}") from None
    return top_k_predictions([s.path for s in samples], probs, classes, top_k)
