"""Everything a finished run leaves: weights, model card, evaluation, plots, summary, report."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file

from snugtune.report import (
    classification_report,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_memory,
    read_model_card,
    write_model_card,
    write_report,
)
from snugtune.train.inference import predict_samples

if TYPE_CHECKING:
    from snugtune.train.runner import _Run

__all__ = ["save_weights", "write_outputs"]

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"


def save_weights(model: Any, path: Path) -> Path:
    """The model's state dict as safetensors (atomic), contiguous for any memory format."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return path


def write_outputs(run: _Run) -> dict[str, Any]:
    """Write the final artifacts of ``run`` and return its summary."""
    cfg, model, data, run_dir = run.cfg, run.model, run.data, run.run_dir
    save_weights(model, run_dir / WEIGHTS)
    pre = {**model.preprocessing.to_dict(), "size": run.resolution}
    evaluation = None
    if data.val:
        probs, labels = predict_samples(model, data.val, pre, device=run.device,
                                        batch_size=cfg.batch_size * 2, workers=cfg.workers)
        evaluation = classification_report(labels.tolist(), probs.argmax(-1).tolist(), data.classes)
        plot_confusion_matrix(evaluation, run_dir / "confusion_matrix.png")
    rows = run.metrics.rows
    if rows:
        plot_learning_curves(rows, run_dir / "learning_curves.png")
    phases = run.state.results
    if any(p.get("predicted_peak_bytes") or p.get("measured_peak_bytes") for p in phases):
        plot_memory(phases, run_dir / "memory.png")
    summary = _summary(run, evaluation)
    write_model_card(
        run_dir / "model_card.json", backbone=model.spec.qualified, classes=data.classes,
        preprocessing=pre, metrics={"best_val_accuracy": summary["best_val_accuracy"]},
        extra={"weights": WEIGHTS, "pretrained": model.weights.source,
               "head": {"hidden": cfg.head_hidden, "dropout": cfg.head_dropout},
               "model": cfg.model},
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    issues = {"skipped": [vars(i) for i in data.scan.skipped],
              "converted": [vars(i) for i in data.scan.converted]}
    plan_path = run_dir / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.exists() else None
    write_report(run_dir, summary, rows=rows, evaluation=evaluation, data_issues=issues, plan=plan)
    return summary


def _summary(run: _Run, evaluation: Any) -> dict[str, Any]:
    accs = [p["best_val_accuracy"] for p in run.state.results if p.get("best_val_accuracy") is not None]
    losses = [p["best_val_loss"] for p in run.state.results if p.get("best_val_loss") is not None]
    return {
        "backbone": run.model.spec.qualified,
        "data": str(run.cfg.data),
        "classes": list(run.data.classes),
        "num_train": len(run.data.train),
        "num_val": len(run.data.val),
        "resolution": run.resolution,
        "device": run.device.type,
        "processes": run.world.world_size,  # data-parallel processes (torchrun), 1 otherwise
        "best_val_accuracy": max(accs) if accs else None,
        "best_val_loss": min(losses) if losses else None,
        "final_val_accuracy": evaluation.accuracy if evaluation else None,
        "total_seconds": round(run.state.total_seconds, 2),
        "skipped_files": len(run.data.scan.skipped),
        "converted_files": len(run.data.scan.converted),
        "phases": run.state.results,
    }


def load_card(run_dir: Path) -> dict[str, Any]:
    """The model card of a finished run."""
    return dict(read_model_card(run_dir / "model_card.json"))
