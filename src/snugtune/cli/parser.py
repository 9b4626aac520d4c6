"""The ``snugtune`` command line, generated from the settings' dataclasses.

A setting has one flag, one help text (its field's docstring) and one default in every command
that takes it: ``--batch-size`` is the same in ``train``, ``plan``, ``memory``, ``evaluate`` and
``predict``. Options that belong to one command only are dataclass fields here. Building the
parser imports no torch, so ``snugtune --help`` is quick.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

from snugtune.cli.flags import add_fields, field_help
from snugtune.config import EXPORT_FORMATS, AugmentConfig, PhaseConfig, TrainConfig, default_phases

__all__ = ["DOCTOR_FIELDS", "PHASE_FIELDS", "RUN_FIELDS", "build_parser"]

#: TrainConfig fields with a flag of their own (data is positional; augment takes KEY=VALUE;
#: phases come from YAML, their settings from the phase flags).
RUN_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in ("data", "augment", "phases"))
#: PhaseConfig fields: ``--NAME`` sets every phase, ``--PHASE-NAME`` one phase.
PHASE_FIELDS = tuple(f.name for f in fields(PhaseConfig) if f.name != "name")
INFERENCE_FIELDS = ("device", "batch_size", "gpu_memory")
#: TrainConfig fields of ``doctor``: where the labels come from, and the split it checks.
DOCTOR_FIELDS = ("labels", "path_column", "label_column", "val_split", "group_split", "seed",
                 "workers", "cache_dir")


@dataclass(frozen=True)
class RunOptions:
    """Options of ``train``, ``plan`` and ``demo`` besides the settings."""

    config: str | None = field(default=None, metadata={"metavar": "YAML"})
    """A YAML file of settings; flags override it."""
    resume: str | None = field(default=None, metadata={"metavar": "RUN"})
    """Continue the stopped run in this folder, with its saved settings."""


@dataclass(frozen=True)
class Output:
    """How a command prints its result."""

    json: bool = False
    """Print the result as JSON."""


@dataclass(frozen=True)
class DemoOptions:
    """Options of ``demo``."""

    data_dir: str = "demo_data/animal_mnist"
    """Where to write the Animal-MNIST images."""
    per_class: int | None = None
    """Images per class (default: all 1,000)."""
    fresh: bool = False
    """Delete an existing demo run first."""


@dataclass(frozen=True)
class MemoryOptions:
    """Options of ``memory`` besides the settings."""

    classes: int = 1000
    """Output classes of the new head."""
    checkpointing: bool = False
    """Checkpoint every block (recompute activations in backward)."""
    channels_last: bool = False
    """NHWC memory format."""


@dataclass(frozen=True)
class LRFindOptions:
    """Options of ``lr-find``."""

    steps: int = 100
    """Optimizer steps of the range test (it stops sooner when the loss diverges)."""
    start_lr: float = 1e-7
    """Learning rate of the first step."""
    end_lr: float = 10.0
    """Learning rate of the last step."""
    plot: str = "lr_find.png"
    """Where to draw the loss against the learning rate."""


@dataclass(frozen=True)
class CalibrateOptions:
    """Options of ``calibrate``."""

    name: str | None = None
    """Name to save the card's profile under (default: from the card, e.g. rtx3060-12gb)."""


@dataclass(frozen=True)
class CacheOptions:
    """Options of ``cache``."""

    clear: bool = False
    """Delete the data index and every cached image and feature (they are made again from the
    image files when needed; do it while no snugtune command runs)."""


@dataclass(frozen=True)
class PredictOptions:
    """Options of ``predict``."""

    top_k: int = 1
    """Classes to list per image."""


@dataclass(frozen=True)
class TTAOptions:
    """Test-time augmentation in ``evaluate`` and ``predict``."""

    tta: bool = False
    """Test-time augmentation: average the probabilities of 4 views of each image (as is, flipped
    left-right, zoomed 1.15x to the centre, zoomed and flipped); evaluate also shows the accuracy
    without it."""


@dataclass(frozen=True)
class ExportOptions:
    """Options of ``export``."""

    format: str = field(default="onnx", metadata={"choices": EXPORT_FORMATS, "aliases": ("-f",)})
    """onnx (onnxruntime), pt2 (a torch.export program), safetensors (the weights) or timm (a
    folder that timm.create_model("local-dir:DIR", pretrained=True) loads, ready for the Hugging
    Face Hub; for a timm backbone with the plain linear head)."""
    output: str | None = field(default=None, metadata={"metavar": "FILE", "aliases": ("-o",)})
    """File to write, for timm a folder (default: RUN/export/model.onnx, model.pt2,
    model.safetensors or timm/)."""


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _augment_help() -> str:
    keys = ", ".join(f.name for f in fields(AugmentConfig) if f.name != "rescale")
    return f"Keras-style augmentation setting as KEY=VALUE, repeatable; keys: {keys}"


def _add_run_settings(p: argparse.ArgumentParser) -> None:
    """Every setting of a run: the flags of ``train``, ``plan`` and ``demo``."""
    add_fields(p, RunOptions, ["config"])
    data = p.add_argument_group("data, model and device")
    add_fields(data, TrainConfig, RUN_FIELDS)
    data.add_argument("--augment", action="append", metavar="KEY=VALUE", help=_augment_help())
    every = p.add_argument_group("recipe: every phase")
    add_fields(every, PhaseConfig, PHASE_FIELDS)
    names = [ph.name for ph in default_phases()]
    one = p.add_argument_group(
        "recipe: one phase",
        " and ".join(f"--{n}-SETTING" for n in names) + " set any recipe setting above for "
        "that phase only, e.g. --head-epochs 3 --finetune-trainable top:4 --finetune-lr 1e-4")
    for name in names:
        add_fields(one, PhaseConfig, PHASE_FIELDS, prefix=name, show_help=False)
    add_fields(p, Output, ["json"])


def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained backbone on a class-folder tree",
                       description="Train a classifier on DATA (a folder of class sub-folders, "
                                   "or of images a labels file lists: --labels).")
    p.add_argument("data", nargs="?", help=field_help(TrainConfig)["data"])
    add_fields(p, RunOptions, ["resume"])
    _add_run_settings(p)


def _plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="plan micro-batch, precision and checkpointing within a memory budget",
        description="Scan DATA, then choose per training phase the fastest configuration whose "
                    "predicted peak memory fits --gpu-memory. With --out, also write OUT/plan.json.")
    p.add_argument("data", help=field_help(TrainConfig)["data"])
    _add_run_settings(p)


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train on the bundled Animal-MNIST data, offline",
                       description="Write Animal-MNIST as class folders and train on them "
                                   "(run folder runs/demo, 6 fine-tuning epochs, unless --out or "
                                   "--finetune-epochs says otherwise).")
    add_fields(p, DemoOptions, _names(DemoOptions))
    _add_run_settings(p)


def _memory(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "memory", help="predict a training step's peak memory, by term",
        description="Simulate two training steps and an evaluation step of MODEL on fake "
                    "tensors (no GPU needed) and explain the predicted peak memory. The step "
                    "trains every block unless --trainable says otherwise.")
    p.add_argument("model", help=field_help(TrainConfig)["model"])
    add_fields(p, TrainConfig, ("batch_size", "resolution", "precision", "device", "gpu"))
    add_fields(p, PhaseConfig, ("trainable", "optimizer", "weight_decay"))
    add_fields(p, MemoryOptions, _names(MemoryOptions))
    add_fields(p, Output, ["json"])


def _evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class precision/recall/F1, confusion matrix")
    p.add_argument("run", help="a finished run folder")
    p.add_argument("data", nargs="?", help="class-folder tree (default: the run's validation split)")
    add_fields(p, TrainConfig, (*INFERENCE_FIELDS, "workers"))
    add_fields(p, TTAOptions, _names(TTAOptions))
    add_fields(p, Output, ["json"])


def _predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a trained run or an exported ONNX model")
    p.add_argument("run", help="a finished run folder, or an exported .onnx file (run by "
                               "onnxruntime; its card FILE.onnx.json must be beside it)")
    p.add_argument("files", nargs="+", help="image files, or folders of them (searched recursively)")
    add_fields(p, TrainConfig, INFERENCE_FIELDS)
    add_fields(p, PredictOptions, _names(PredictOptions))
    add_fields(p, TTAOptions, _names(TTAOptions))
    add_fields(p, Output, ["json"])


def _export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a trained run as ONNX, a torch.export program, safetensors or a "
                       "timm/Hugging Face Hub folder",
        description="Export RUN's model plus a model card FILE.json beside it (timm: a folder of "
                    "config.json, model.safetensors and the Hub's README.md). The export is "
                    "loaded back and compared with PyTorch on the run's validation images "
                    "(max |logit difference| <= 1e-4) before it is written.")
    p.add_argument("run", help="a finished run folder")
    add_fields(p, ExportOptions, _names(ExportOptions))
    add_fields(p, Output, ["json"])


def _lr_find(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-find", help="learning-rate range test of the first phase, with its plot",
        description="Train the first phase of the recipe on DATA for a few steps while the "
                    "learning rate grows exponentially, plot the loss against it and suggest "
                    "one (steepest descent; a tenth of the minimum's). The model is thrown away.")
    p.add_argument("data", help=field_help(TrainConfig)["data"])
    add_fields(p, LRFindOptions, _names(LRFindOptions))
    _add_run_settings(p)


def _doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="find duplicate images, leakage across the split and conflicting labels",
        description="Scan DATA and split it as train would, then list copies of one picture "
                    "(identical files, or re-encoded: perceptual hash and thumbnail) within a "
                    "class, across classes (conflicting labels) and across the train/validation "
                    "split (leakage), and every file that cannot be used.")
    p.add_argument("data", help=field_help(TrainConfig)["data"])
    add_fields(p, TrainConfig, DOCTOR_FIELDS)
    add_fields(p, Output, ["json"])


def _calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="measure this GPU (context, capacity) and save its profile",
        description="On a machine with a CUDA GPU: measure what a training process holds on it "
                    "outside PyTorch's caching allocator (the CUDA context and kernels), its "
                    "capacity and architecture, and save them as a profile, so that plans made "
                    "elsewhere for this card (--gpu NAME) use the measured figures.")
    add_fields(p, CalibrateOptions, _names(CalibrateOptions))
    add_fields(p, Output, ["json"])


def _cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache", help="show what the shared cache holds (data index, images, features), or clear it",
        description="The cache folder every command and run shares: the data index (each file's "
                    "scan, by path and identity), the images decoded once per resolution and "
                    "the frozen backbones' features; where it is, how big each part is, and "
                    "--clear to delete it.")
    add_fields(p, TrainConfig, ("cache_dir",))
    add_fields(p, CacheOptions, _names(CacheOptions))
    add_fields(p, Output, ["json"])


def build_parser() -> argparse.ArgumentParser:
    """The ``snugtune`` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="snugtune", description="Fine-tune pretrained image classifiers within the memory "
                                     "and the time you have.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_train, _plan, _doctor, _lr_find, _memory, _evaluate, _predict, _export,
                _calibrate, _cache, _demo):
        add(sub)
    return parser
