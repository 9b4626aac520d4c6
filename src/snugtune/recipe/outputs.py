"""Everything a finished run leaves: weights, model card, evaluation, plots, summary, report."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from snugtune.config import TrainConfig
from snugtune.data.doctor import diagnose
from snugtune.infer import predict_samples
from snugtune.recipe.setup import Setup
from snugtune.recipe.state import RunState
from snugtune.report import (
    ClassificationReport,
    HardImage,
    classification_report,
    hardest_images,
    plot_confusion_matrix,
    plot_images,
    plot_learning_curves,
    plot_memory,
    write_model_card,
    write_report,
)
from snugtune.results import RunSummary
from snugtune.rundir import RunDir, atomic_write

__all__ = ["save_weights", "write_outputs"]

log = logging.getLogger(__name__)


def save_weights(model: nn.Module, path: Path) -> Path:
    """The model's state dict as safetensors (atomic), contiguous for any memory format."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def write_outputs(run: RunDir, cfg: TrainConfig, setup: Setup, state: RunState,
                  rows: Sequence[Mapping[str, object]]) -> RunSummary:
    """Write the final files of a finished run and return its summary."""
    model, data = setup.model, setup.data
    save_weights(model, run.weights)
    pre = {**model.preprocessing.to_dict(), "size": setup.resolution}
    evaluation: ClassificationReport | None = None
    hardest: tuple[HardImage, ...] = ()
    if data.val:
        probs, labels = predict_samples(  # under the training's cap, at its last micro-batch
            model, data.val, pre, device=setup.world.device, batch_size=cfg.batch_size,
            workers=cfg.workers, decoded=setup.images.view(data.val) if setup.images else None,
            gpu_memory=cfg.gpu_memory, context_bytes=setup.plan.context_bytes,
            micro_batch=state.results[-1].micro_batch if state.results else None)
        evaluation = classification_report(labels.tolist(), probs.argmax(-1).tolist(), data.classes)
        plot_confusion_matrix(evaluation, run.confusion_matrix)
        hardest = hardest_images([s.path for s in data.val], labels.numpy(), probs.numpy(),
                                 data.classes)
        plot_images([(h.path, f"{h.label} -> {h.predicted}\np={h.p_label:.2f}") for h in hardest],
                    run.hardest_val)
    if rows:
        plot_learning_curves(rows, run.learning_curves)
    if any(p.predicted_peak_bytes or p.measured_peak_bytes for p in state.results):
        plot_memory(state.results, run.memory_plot)
    summary = _summary(cfg, setup, state, evaluation)
    write_model_card(
        run.card, backbone=model.spec.qualified, classes=data.classes, preprocessing=pre,
        metrics={"best_val_accuracy": summary.best_val_accuracy},
        extra={"weights": run.weights.name, "pretrained": model.weights.source,
               "head": {"hidden": cfg.head_hidden, "dropout": cfg.head_dropout},
               "model": cfg.model, "pre_logits": cfg.pre_logits},
    )
    run.write_summary(summary)
    issues = {"skipped": [vars(i) for i in data.scan.skipped],
              "converted": [vars(i) for i in data.scan.converted]}
    doctor = diagnose(data)
    write_report(run, summary, rows=rows, evaluation=evaluation, data_issues=issues,
                 plan=setup.plan.to_dict(), doctor=doctor, hardest=hardest)
    return summary


def _summary(cfg: TrainConfig, setup: Setup, state: RunState,
             evaluation: ClassificationReport | None) -> RunSummary:
    accs = [p.best_val_accuracy for p in state.results if p.best_val_accuracy is not None]
    losses = [p.best_val_loss for p in state.results if p.best_val_loss is not None]
    data = setup.data
    return RunSummary(
        backbone=setup.model.spec.qualified, data=str(cfg.data), classes=data.classes,
        num_train=len(data.train), num_val=len(data.val), resolution=setup.resolution,
        device=setup.world.device.type, processes=setup.world.world_size,
        best_val_accuracy=max(accs) if accs else None,
        best_val_loss=min(losses) if losses else None,
        final_val_accuracy=evaluation.accuracy if evaluation else None,
        total_seconds=round(state.total_seconds, 2), time_budget=cfg.time_budget,
        time_plan=dict(state.time_plan) or None,
        flip_check=setup.flips.to_dict() if setup.flips else None,
        decoded_images=setup.images.to_dict() if setup.images else None, race=setup.race,
        skipped_files=len(data.scan.skipped),
        converted_files=len(data.scan.converted), phases=state.results,
    )
