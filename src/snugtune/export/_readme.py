"""The Hugging Face model card (``README.md``) of a ``--format timm`` folder.

YAML front matter the Hub reads (``library_name: timm``, ``pipeline_tag``, ``tags``; ``license``
and ``base_model`` only when known: the backbone's weights were timm's own checkpoint), then for
people: the data and classes, the metrics, the phases, plan and memory the run trained under
(its ``summary.json`` and ``plan.json``), how to load the folder with timm and preprocess an image
as snugtune does, and the export check. Values a run did not record render as an em dash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from snugtune._version import __version__
from snugtune.report._format import MISSING, fmt_bool, fmt_bytes, fmt_float, fmt_int, fmt_percent
from snugtune.report.document import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Table,
    render_markdown,
)
from snugtune.report.sections import memory_section, phases_section
from snugtune.results import RunSummary
from snugtune.rundir import RunDir

__all__ = ["hub_readme"]

_TAGS = ("image-classification", "timm", "snugtune")
_PRETRAINED = {"none": "random weights (--weights none)", "timm-hub": "timm's pretrained weights"}


def hub_readme(card: Mapping[str, Any], run: RunDir, folder: Path, export: Mapping[str, Any],
               check: Mapping[str, Any]) -> str:
    """The model card of the timm folder ``folder`` exported from ``run``.

    Args:
        card: the run's model card (classes, preprocessing, metrics, weights' source).
        run: the run folder (its summary, plan and split are read when present).
        folder: where the export is published (for the loading example).
        export: what the writer recorded (architecture, classifier, license, base model).
        check: the export check (max_abs_diff, tolerance, checked_on, inputs).
    """
    summary = RunSummary.from_dict(run.read_json(run.summary) or {})
    arch = str(export["architecture"])
    classes = [str(c) for c in card["classes"]]
    blocks: list[Block] = [
        Heading(f"{arch} fine-tuned on {len(classes)} classes", level=1),
        Paragraph(f"An image classifier exported by snugtune {__version__}: timm's {arch} with a "
                  f"new linear classifier ({export.get('classifier') or MISSING}) for the classes "
                  f"below, fine-tuned from {_pretrained(card.get('pretrained'))}."),
        *_data(summary, run, classes),
        *_metrics(card, summary),
        *phases_section(summary),
        *_plan(run.read_json(run.plan)),
        *[b for b in memory_section(summary, run) if not isinstance(b, Image)],  # no plots here
        *_usage(folder, card["preprocessing"]),
        Heading("Export check"),
        Paragraph(f"Loaded back with timm.create_model(\"local-dir:...\", pretrained=True) and run "
                  f"on {check['checked_on']} images of the run's {check['inputs']}: its logits "
                  f"differ from snugtune's by at most {float(check['max_abs_diff']):.2g} "
                  f"(tolerance {float(check['tolerance']):g})."),
    ]
    return _front_matter(export) + "\n" + render_markdown(blocks)


def _front_matter(export: Mapping[str, Any]) -> str:
    meta: dict[str, Any] = {"library_name": "timm", "pipeline_tag": "image-classification",
                            "tags": list(_TAGS)}
    if export.get("license"):
        meta["license"] = export["license"]
    if export.get("base_model"):
        meta["base_model"] = export["base_model"]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _pretrained(source: object) -> str:
    text = str(source or "")
    if text.startswith("package:"):
        return f"the ImageNet weights of a package ({text.removeprefix('package:')})"
    if text.startswith("file:"):
        return f"the weights of the file {text.removeprefix('file:')}"
    return _PRETRAINED.get(text, text or "weights of unrecorded source")


def _data(summary: RunSummary, run: RunDir, classes: Sequence[str]) -> list[Block]:
    split = run.read_split()
    train = Counter(k for _, k in split[0]) if split else Counter()
    val = Counter(k for _, k in split[1]) if split else Counter()
    rows = tuple((str(i), c, fmt_int(train[i]) if split else MISSING,
                  fmt_int(val[i]) if split else MISSING) for i, c in enumerate(classes))
    return [
        Heading("Data"),
        Bullets((f"Images: {fmt_int(summary.num_train)} for training, "
                 f"{fmt_int(summary.num_val)} for validation, from the folder "
                 f"{Path(summary.data).name if summary.data else MISSING}",
                 f"Resolution: {fmt_int(summary.resolution)} px",
                 f"Files skipped as unreadable: {fmt_int(summary.skipped_files)}")),
        Paragraph("Classes, in the order of the logits (config.json's label_names):"),
        Table(("Index", "Label", "Training images", "Validation images"), rows,
              (True, False, True, True)),
    ]


def _metrics(card: Mapping[str, Any], summary: RunSummary) -> list[Block]:
    metrics = dict(card.get("metrics") or {})
    rows = [(key.replace("_", " "), fmt_percent(v) if "accuracy" in key else fmt_float(v))
            for key, v in metrics.items()]
    seen = set(metrics)
    for key, value in (("best_val_loss", summary.best_val_loss),
                       ("final_val_accuracy", summary.final_val_accuracy)):
        if key not in seen and value is not None:
            rows.append((key.replace("_", " "), fmt_percent(value) if "accuracy" in key
                         else fmt_float(value)))
    if not rows:
        return [Heading("Metrics"), Paragraph("No metrics were recorded.")]
    return [Heading("Metrics"),
            Paragraph(f"On the run's validation split ({fmt_int(summary.num_val)} images)."),
            Table(("Metric", "Value"), tuple(rows), (False, True))]


def _plan(plan: Mapping[str, Any] | None) -> list[Block]:
    """The plan each phase trained under: the budget, and what the planner chose to fit it."""
    if not plan:
        return []
    budget = plan.get("budget_bytes")
    where = plan.get("gpu") or plan.get("device") or MISSING
    text = (f"Planned for {where} under a memory budget of {fmt_bytes(budget)}" if budget
            else f"Planned for {where} without a memory budget")
    rows = tuple((str(p.get("phase", MISSING)), str(p.get("trainable", MISSING)),
                  str(p.get("precision", MISSING)),
                  ", ".join(str(b) for b in p.get("checkpointing") or ()) or "none",
                  fmt_bool(p.get("channels_last")), fmt_bool(p.get("feature_cache")),
                  fmt_bytes(p.get("predicted_peak_bytes")), str(p.get("limited_by") or MISSING))
                 for p in plan.get("phases") or () if isinstance(p, Mapping))
    header = ("Phase", "Trainable", "Precision", "Checkpointed blocks", "Channels last",
              "Feature cache", "Predicted peak", "Limited by")
    return [Heading("Plan"), Paragraph(text + " (snugtune plan; plan.json in the run)."),
            Table(header, rows, (False, False, False, False, False, False, True, False))]


def _usage(folder: Path, pre: Mapping[str, Any]) -> list[Block]:
    size, interp = int(pre["size"]), str(pre.get("interpolation", "bilinear"))
    code = "\n".join([
        "import timm, torch",
        "from PIL import Image, ImageOps",
        "",
        f'model = timm.create_model("local-dir:{folder}", pretrained=True).eval()',
        '# once uploaded: timm.create_model("hf-hub:USER/REPO", pretrained=True)',
        "config = timm.data.resolve_data_config(model=model)",
        "transform = timm.data.create_transform(**config)",
        'image = ImageOps.exif_transpose(Image.open("image.jpg")).convert("RGB")',
        "with torch.no_grad():",
        "    probs = model(transform(image).unsqueeze(0)).softmax(-1)[0]",
        'labels = model.pretrained_cfg["label_names"]',
        "top = probs.topk(min(3, len(labels)))",
        "print([(labels[i], float(p)) for p, i in zip(top.values, top.indices)])",
    ])
    steps = ("Apply the EXIF orientation (snugtune does; timm's transform does not)",
             f"Resize the whole image to {size} x {size} ({interp}; no crop, the aspect ratio is "
             "not kept: timm's crop_mode squash with crop_pct 1.0)",
             "Scale to [0, 1] and normalise with mean "
             f"{_floats(pre['mean'])} and std {_floats(pre['std'])}")
    return [Heading("How to use"), Code(code, "python"),
            Paragraph("The preprocessing is in config.json's pretrained_cfg, so the transform "
                      "above is the one snugtune validated and predicts with:"),
            Bullets(steps),
            Paragraph("snugtune resizes 8-bit tensors with torchvision's antialiased kernels, "
                      "timm resizes PIL images: an image already of the model's size gets the "
                      "same input; otherwise bilinear agrees within one level of 255, and bicubic "
                      "differs on sharp detail (cubic coefficient -0.75 against PIL's -0.5). "
                      "snugtune also decodes large JPEGs at a reduced scale.")]


def _floats(values: Sequence[Any]) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
