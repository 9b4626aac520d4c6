"""Every setting of a run, as frozen dataclasses; each field's docstring is its ``--help``.

The option lists (``PRECISIONS``, ``OPTIMIZERS``...) and the trainable-set grammar
(``parse_trainable``) are defined here once: the validation, the CLI's choices, the trainer and
the memory simulator all read them from this module. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLASS_WEIGHTS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MODEL",
    "DEFAULT_OUT",
    "DEVICES",
    "EXPORT_FORMATS",
    "FILL_MODES",
    "LABEL_FORMATS",
    "MONITORS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "AugmentConfig",
    "PhaseConfig",
    "TrainConfig",
    "config_to_dict",
    "default_phases",
    "parse_trainable",
]

DEFAULT_MODEL = "tf_efficientnet_lite0"
DEFAULT_BATCH_SIZE = 32
DEFAULT_OUT = "runs/latest"
LABEL_FORMATS = ("csv", "tsv", "jsonl")  # labels files, by extension (data.labels_file)
FILL_MODES = ("constant", "nearest", "reflect", "wrap")
SCHEDULES = ("cosine", "onecycle", "constant")
OPTIMIZERS = ("adamw", "adam", "sgd")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MONITORS = ("val_loss", "val_accuracy")
CLASS_WEIGHTS = ("auto", "balanced", "none")
EXPORT_FORMATS = ("onnx", "pt2", "safetensors", "timm")


def parse_trainable(trainable: str) -> int | None:
    """Trainable backbone blocks: ``"head"`` -> 0, ``"top:N"`` -> N, ``"all"`` -> None.

    Raises:
        ValueError: anything else; the message names the accepted forms.
    """
    if trainable == "all":
        return None
    if trainable == "head":
        return 0
    if (isinstance(trainable, str) and trainable.startswith("top:") and trainable[4:].isdigit()
            and int(trainable[4:]) >= 1):
        return int(trainable[4:])
    raise ValueError(f"{trainable!r} must be head, all or top:N (N >= 1)")


def _choices(options: tuple[str, ...]) -> dict[str, Any]:
    return {"choices": options}


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, named as Keras' ``ImageDataGenerator`` names it.

    Ranges follow Keras: shifts are fractions of the image side, rotation and shear are
    degrees, ``zoom_range=z`` zooms in [1-z, 1+z], ``brightness_range=(lo, hi)`` multiplies.
    """

    rescale: float | None = None
    """Accepted for familiarity: inputs are always scaled to [0, 1] and normalised with the
    backbone's mean/std, so only 1/255 (or nothing) is valid."""
    rotation_range: float = 10.0
    """Random rotation, degrees in [0, 180]."""
    width_shift_range: float = 0.1
    """Random horizontal shift, a fraction of the width."""
    height_shift_range: float = 0.1
    """Random vertical shift, a fraction of the height."""
    shear_range: float = 0.0
    """Random shear, degrees."""
    zoom_range: float = 0.1
    """Random zoom in [1 - z, 1 + z]."""
    horizontal_flip: bool | None = None
    """Flip left-right at random (default: decided from the training images: off when the
    classes' average images are not their own mirror, as for digits and text)."""
    vertical_flip: bool = False
    """Flip upside down at random."""
    brightness_range: tuple[float, float] | None = None
    """Multiply brightness by a factor in [lo, hi], e.g. [0.8, 1.2]."""
    fill_mode: str = field(default="nearest", metadata=_choices(FILL_MODES))
    """How pixels outside the image are filled after a rotation or shift."""
    cval: float = 0.0
    """Fill value for fill_mode=constant."""
    color_jitter: float = 0.0
    """Random brightness/contrast/saturation change of up to this fraction."""
    random_erasing: float = 0.0
    """Probability of erasing a random rectangle."""
    mixup_alpha: float = 0.0
    """MixUp Beta(alpha, alpha) mixing of image pairs (0: off)."""
    cutmix_alpha: float = 0.0
    """CutMix Beta(alpha, alpha) patch mixing of image pairs (0: off)."""


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase of the recipe (``head``, then ``finetune``)."""

    name: str
    """The phase's name (head, finetune, ...)."""
    epochs: int | None
    """Epochs to train (default: scaled to the data, at least a set number of optimizer
    steps; fitted to --time-budget when there is one); early stopping may end it sooner; 0
    skips the phase."""
    lr: float
    """Learning rate of the head."""
    trainable: str = "head"
    """What trains: head (backbone frozen), top:N (the top N backbone blocks too) or all."""
    backbone_lr_ratio: float = 0.1
    """Backbone learning rate as a fraction of lr."""
    layer_decay: float = 1.0
    """Further LR factor per backbone block counted from the top (discriminative LR)."""
    weight_decay: float = 1e-4
    """L2 weight decay (not on biases and norms)."""
    optimizer: str = field(default="adamw", metadata=_choices(OPTIMIZERS))
    """Optimizer: AdamW, Adam or SGD with Nesterov momentum."""
    momentum: float = 0.9
    """SGD momentum."""
    schedule: str = field(default="cosine", metadata=_choices(SCHEDULES))
    """Learning-rate schedule over the phase's steps."""
    warmup_epochs: float = 0.0
    """Linear learning-rate warm-up, in epochs."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy loss."""
    patience: int | None = 3
    """Early stopping: epochs without improvement before the phase ends (null: never)."""
    monitor: str = field(default="val_loss", metadata=_choices(MONITORS))
    """What early stopping and restore-best watch."""
    restore_best: bool = True
    """End the phase with the weights of its best epoch."""
    train_bn: bool = False
    """Update the BatchNorm statistics of trainable blocks (off: keep the pretrained ones)."""

    def top_blocks(self) -> int | None:
        """Number of trainable backbone blocks: 0 for head, None for all."""
        return parse_trainable(self.trainable)


def default_phases() -> tuple[PhaseConfig, ...]:
    """The classic recipe: train a new head on a frozen base, then fine-tune the top."""
    return (
        PhaseConfig(name="head", epochs=None, lr=1e-3, trainable="head", warmup_epochs=0.0),
        PhaseConfig(name="finetune", epochs=None, lr=1e-3, trainable="top:2",
                    backbone_lr_ratio=0.1, warmup_epochs=0.5),
    )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as ``config.yaml`` in the run folder."""

    data: str
    """Image folder: DATA/<class>/*.jpg (or DATA/train and DATA/val trees, or the images a
    labels file lists)."""
    labels: str | None = field(default=None, metadata={"metavar": "FILE"})
    """Labels file instead of class folders: a CSV, TSV or JSONL file (by its extension) with
    a column of image paths, relative to the data folder (the extension may be left out when
    one image matches), and a column of labels. Default: DATA/metadata.csv or
    DATA/metadata.jsonl (Hugging Face imagefolder) when there is one, else the class folders."""
    path_column: str = field(default="file_name", metadata={"metavar": "NAME"})
    """Column (JSONL: key) of the labels file that holds the image paths, e.g. id."""
    label_column: str = field(default="label", metadata={"metavar": "NAME"})
    """Column (JSONL: key) of the labels file that holds the labels."""
    out: str = DEFAULT_OUT
    """Run folder."""
    model: str = DEFAULT_MODEL
    """Backbone: a timm or torchvision name (timm:NAME or torchvision:NAME forces the source)."""
    weights: str = "auto"
    """Pretrained weights: auto (package, cache or hub), none (from scratch) or a FILE."""
    resolution: int | None = field(default=None, metadata={"aliases": ("--res",)})
    """Input size in px (default: the backbone's, lowered for small images)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Effective batch size (kept by gradient accumulation whatever the micro-batch)."""
    val_split: float = 0.2
    """Share of each class held out for validation."""
    group_split: bool = True
    """Keep every group of copies of one picture (the data doctor's: identical files, or the
    same picture re-encoded) on one side of the train/validation split, so that validation
    never scores a picture the model trained on; off: the plain stratified split."""
    seed: int = 0
    """Seed of the split, the shuffles, the augmentation and the new head."""
    workers: int | None = None
    """Loader processes (default: sized to the machine)."""
    head_hidden: int | None = None
    """Width of an extra dense layer in the head (default: none)."""
    head_dropout: float = 0.2
    """Dropout before the head's linear layers."""
    pre_logits: bool = False
    """Keep the backbone's pre-logits layers (timm VGG's fc6/fc7); by default its pooled
    features feed the new head, as Keras' include_top=False."""
    class_weights: str = field(default="auto", metadata=_choices(CLASS_WEIGHTS))
    """Loss weights per class: balanced, none, or auto (balanced when classes differ > 1.5x)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Keras-style augmentation, as KEY=VALUE (e.g. rotation_range=20)."""
    phases: tuple[PhaseConfig, ...] = field(default_factory=default_phases)
    """The recipe's phases (YAML)."""
    device: str = field(default="auto", metadata=_choices(DEVICES))
    """Where to run: auto is the GPU when one is visible, else the CPU (plan and memory: also
    the card --gpu names)."""
    gpu: str = "auto"
    """GPU to plan for: auto (the one present) or a profile name, e.g. t4-16gb."""
    gpu_memory: int | None = field(default=None, metadata={"type": str, "metavar": "SIZE"})
    """Memory budget, e.g. 4GiB: the plan fits it and the run is held to it."""
    time_budget: float | None = field(default=None, metadata={"type": str, "metavar": "DURATION"})
    """Wall time for the whole run, e.g. 10m or 1h30m: each phase's epochs are fitted to it
    from what the run measures on this machine."""
    precision: str = field(default="auto", metadata=_choices(PRECISIONS))
    """Autocast precision (auto: the planner's choice for the device)."""
    micro_batch: int | None = None
    """Force a micro-batch instead of planning one."""
    deterministic: bool = False
    """Deterministic algorithms: on the CPU a resumed run is bit-identical."""
    feature_cache: bool = True
    """Cache the frozen backbone's features for head-only phases."""
    cache_dir: str | None = field(default=None, metadata={"metavar": "DIR"})
    """Folder of the data index and the decoded-image and feature caches that every command
    and run shares (default: $SNUGTUNE_CACHE_DIR, else ~/.cache/snugtune)."""
    progress: bool = True
    """Draw progress bars."""


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain, YAML-safe dict of a config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))  # type: ignore[no-any-return]
