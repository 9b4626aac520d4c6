"""The report's data doctor: copies of one picture across classes, across the train/validation
split and within a class (``data.doctor``), and the validation images the trained model finds
hardest, as a thumbnail grid: where mislabelled images usually are."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from snugtune.data.doctor import PROBLEMS, DataDoctor
from snugtune.report._format import fmt_int
from snugtune.report.document import Block, Heading, Image, Paragraph, Table
from snugtune.rundir import RunDir

__all__ = ["HARDEST", "HardImage", "doctor_section", "hardest_images", "split_note"]

HARDEST = 16  # validation images shown
_EXAMPLES = 8  # groups listed per problem

_MEANING = {
    "conflicting labels": "the same picture in two classes: at least one label is wrong",
    "leakage": "the same picture in training and validation: validation accuracy is inflated",
    "duplicates": "the same picture more than once in one class and split: it weighs more",
}


@dataclass(frozen=True)
class HardImage:
    """A validation image and what the model made of it."""

    path: str
    label: str
    predicted: str
    p_label: float  # the probability the model gave its label
    loss: float  # -log p_label


def hardest_images(paths: Sequence[str], labels: np.ndarray, probs: np.ndarray,
                   classes: Sequence[str], k: int = HARDEST) -> tuple[HardImage, ...]:
    """The ``k`` images with the highest loss (lowest probability for their own label)."""
    p = probs[np.arange(len(labels)), labels].astype(np.float64)
    order = np.argsort(p, kind="stable")[:k]
    pred = probs.argmax(-1)
    return tuple(HardImage(paths[i], classes[int(labels[i])], classes[int(pred[i])], float(p[i]),
                           float(-math.log(max(p[i], 1e-12)))) for i in order)


def split_note(doctor: DataDoctor) -> str:
    """What the split did with the groups of copies, in a sentence."""
    if doctor.kept_together:
        return (f"The split kept {fmt_int(doctor.kept_together)} groups of copies on one side "
                "each, so validation scores no picture the model trained on (--no-group-split: "
                "the plain split).")
    leaks = len(doctor.of("leakage"))
    if leaks:
        return (f"{fmt_int(leaks)} groups of copies lie on both sides of the split: this split "
                "was the folder's own (train/ and val/) or made with --no-group-split.")
    return "No picture lies on both sides of the split."


def doctor_section(doctor: DataDoctor | None, hardest: Sequence[HardImage],
                   run: RunDir, root: str | None = None) -> list[Block]:
    """Counts per problem, examples of each, and the hardest validation images; files under
    the data folder ``root`` are named relative to it."""

    def name(path: str) -> str:
        rel = os.path.relpath(path, root) if root and os.path.isabs(path) else path
        return path if rel.startswith(os.pardir) else rel

    if doctor is None and not hardest:
        return []
    blocks: list[Block] = [Heading("Data doctor")]
    if doctor is not None:
        counts = doctor.counts()
        blocks.append(Paragraph(
            f"Looked at {fmt_int(doctor.images)} images for copies of one picture (identical "
            "files, or the same picture re-encoded: perceptual hash and thumbnail)."
            + (f" Files are under `{root}`." if root else "") + " " + split_note(doctor)))
        blocks.append(Table(("Problem", "Groups", "Extra copies", "What it means"), tuple(
            (p, fmt_int(counts[p]["groups"]), fmt_int(counts[p]["extra"]), _MEANING[p])
            for p in PROBLEMS), (False, True, True, False)))
        for problem in PROBLEMS:
            groups = doctor.of(problem)
            if not groups:
                continue
            rows = tuple(
                (g.kind, "; ".join(f"{name(p)} ({c}, {s})" for p, c, s in g.files))
                for g in groups[:_EXAMPLES])
            more = len(groups) - _EXAMPLES
            blocks.append(Paragraph(f"{problem.capitalize()}" + (
                f" (first {_EXAMPLES} of {fmt_int(len(groups))}):" if more > 0 else ":")))
            blocks.append(Table(("Copies", "Files (class, split)"), rows))
    if hardest:
        blocks.append(Paragraph(
            "Validation images with the highest loss (the lowest probability for their own "
            "label): check their labels first." + (f" Files are under `{root}`." if root else "")))
        if run.hardest_val.is_file():
            blocks.append(Image(run.hardest_val.name, "validation images with the highest loss"))
        blocks.append(Table(("Image", "Label", "Predicted", "P(label)"), tuple(
            (name(h.path), h.label, h.predicted, f"{h.p_label:.3f}") for h in hardest),
            (False, False, False, True)))
    return blocks
