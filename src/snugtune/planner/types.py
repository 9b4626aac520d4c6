"""Plans are data: a ``PhasePlan`` per training phase inside a ``Plan``, saved as plan.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from snugtune.rundir import RunDir, write_json

__all__ = ["PhasePlan", "Plan"]

PLAN_VERSION = 1


@dataclass(frozen=True)
class PhasePlan:
    """How one phase runs, and the memory it is predicted to need.

    Attributes:
        phase: the phase's name (``head``, ``finetune``...).
        trainable: ``head``, ``top:N`` or ``all`` (as configured).
        optimizer: the phase's optimizer.
        micro_batch: images per forward/backward.
        accumulation: micro-batches per optimizer step, ``ceil(batch_size / micro_batch)``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        checkpointing: backbone block indices whose activations are recomputed in backward.
        channels_last: NHWC memory format.
        feature_cache: the backbone is fully frozen, so its features can be cached.
        predicted_peak_bytes: predicted device peak (under the budget's cap when there is one).
        tensor_peak_bytes: predicted live tensor bytes at the peak.
        budget_bytes: the memory budget, ``None`` when none was given.
        utilisation: ``predicted_peak_bytes / budget_bytes`` (``None`` without budget).
        breakdown: predicted bytes by term at the peak (see ``snugtune.memory``).
        limited_by: what set the micro-batch: ``budget``, ``batch_size``, ``dataset``,
            ``micro_batch`` (given by the user) or ``no budget``; ``frozen depth`` when the
            budget also made the planner train fewer blocks than asked (``trainable`` is then
            the depth planned).
    """

    phase: str
    trainable: str
    optimizer: str
    micro_batch: int
    accumulation: int
    precision: str
    checkpointing: tuple[int, ...]
    channels_last: bool
    feature_cache: bool
    predicted_peak_bytes: int
    tensor_peak_bytes: int
    budget_bytes: int | None
    utilisation: float | None
    breakdown: dict[str, int] = field(hash=False)
    limited_by: str = "budget"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["checkpointing"] = list(self.checkpointing)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhasePlan:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["checkpointing"] = tuple(int(i) for i in kw.get("checkpointing", ()))
        kw["breakdown"] = {str(k): int(v) for k, v in kw.get("breakdown", {}).items()}
        return cls(**kw)


@dataclass(frozen=True)
class Plan:
    """The plan of a run: one :class:`PhasePlan` per phase, and what it was made for."""

    model: str
    device: str
    gpu: str
    resolution: int
    num_classes: int
    num_train: int
    batch_size: int
    budget_bytes: int | None
    phases: tuple[PhasePlan, ...]
    gpu_profile: dict[str, Any] | None = None
    device_info: dict[str, Any] | None = None
    version: int = PLAN_VERSION

    @property
    def context_bytes(self) -> int:
        """The most CUDA context the plan may have counted (0 on the CPU): the profile's, and
        the cuDNN kernels a network of convolutions loads after a probe. The guard caps the
        caching allocator at the budget less this."""
        if self.device != "cuda" or not self.gpu_profile:
            return 0
        return int(self.gpu_profile.get("context_bytes", 0)) + int(
            self.gpu_profile.get("conv_kernels_bytes", 0))

    def phase(self, name: str) -> PhasePlan:
        """The plan of the phase called ``name``.

        Raises:
            KeyError: no such phase.
        """
        for p in self.phases:
            if p.phase == name:
                return p
        raise KeyError(f"no phase {name!r} in plan (phases: {[p.phase for p in self.phases]})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "phases"}
        d["phases"] = [p.to_dict() for p in self.phases]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names and k != "phases"}
        phases = tuple(PhasePlan.from_dict(p) for p in data.get("phases", []))
        return cls(**kw, phases=phases)

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON, atomically; a folder (any path not ending in ``.json``) gets
        ``plan.json`` inside it. Returns the file written."""
        target = Path(path)
        if target.is_dir() or target.suffix.lower() != ".json":
            target = RunDir(target).plan
        return write_json(target, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan written by :meth:`save` (a file, or a folder holding ``plan.json``)."""
        source = Path(path)
        if source.is_dir():
            source = RunDir(source).plan
        return cls.from_dict(json.loads(source.read_text(encoding="utf-8")))
