"""The GPU a plan is for: the card present (asked), a profile ``snugtune calibrate`` saved on a
card, or an offline profile of published figures. A measured context beats a constant.

Asking the card (:func:`probe`): once CUDA, cuBLAS (a matmul) and cuDNN (a convolution's
forward and backward) are initialised, ``torch.cuda.mem_get_info`` gives the card's total and
free memory; the memory this process holds outside PyTorch's caching allocator (the CUDA
context and the loaded kernels) is what the process uses less ``torch.cuda.memory_reserved``.
What the process uses comes from NVML when ``nvidia-ml-py`` is installed (``pip install
snugtune[gpu]``): the NVML device is the one torch uses (matched by UUID), this process found by
its PID or, in a container's PID namespace, as the card's only process; else it is taken as the
card's used memory (every other process on the card then counts as context: conservative), and
``DeviceInfo.reading`` says which.

Offline profiles (``PROFILES``): the total memory is what PyTorch reports for the card
(``total_memory``, less than the label: the driver and ECC keep some), and the context is the
non-PyTorch memory of training processes with current PyTorch and CUDA lazy module loading
(PyTorch's default since 1.13, CUDA's since 12.2). Each figure's source is in
``benchmarks/data/gpu_capacity_and_context.md``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from snugtune.errors import ConfigError
from snugtune.rundir import write_json
from snugtune.units import GIB, MIB

__all__ = [
    "CALIBRATION_DIR_ENV",
    "PROFILES",
    "DeviceInfo",
    "GpuProfile",
    "calibration_dir",
    "own_pids",
    "own_usage",
    "get_gpu_profile",
    "probe",
    "resolve_gpu",
    "save_calibration",
]

log = logging.getLogger(__name__)

#: Set to a folder to keep calibrated GPU profiles elsewhere (default ~/.cache/snugtune/gpus).
CALIBRATION_DIR_ENV = "SNUGTUNE_GPU_PROFILES"

# cuBLAS workspace per handle and stream. Source: aten/src/ATen/cuda/CublasHandlePool.cpp,
# default CUBLAS_WORKSPACE_CONFIG ":4096:2:16:8" = 2 x 4096 KiB + 8 x 16 KiB; 32 MiB on sm90.
CUBLAS_WORKSPACE_BYTES = 2 * 4096 * 1024 + 8 * 16 * 1024
CUBLAS_WORKSPACE_BYTES_SM90 = 8 * 4096 * 1024
# cuDNN's convolution kernels load lazily when first used, so networks of convolutions hold
# more outside PyTorch's allocator than transformers do. Added to a context that was measured
# before a real network ran (the probe runs two small convolutions only). Fitted on the fit half
# of the GPUMemNet A100 set (benchmarks/data/gpumemnet_timm_train_peaks.csv) by
# planner_accuracy.py part B: 199 MiB (planner_accuracy.json, calibration.gpu.conv_kernels_bytes);
# the 128 MiB used here comes from an earlier reading of that set that no committed JSON records:
# to be measured on a real card (benchmarks/gpu_truth.py).
CONV_KERNELS_BYTES = 128 * MIB


@dataclass(frozen=True)
class GpuProfile:
    """A GPU the planner can target.

    Attributes:
        name: the profile's name (``--gpu``).
        memory_bytes: total memory as PyTorch reports it; None for the generic profile.
        context_bytes: memory a training process holds outside the caching allocator (CUDA
            context, loaded CUDA/cuBLAS/cuDNN kernels).
        compute_capability: (major, minor).
        bf16: bf16 autocast runs on tensor cores (sm80+); else fp16 is preferred.
        description: for people.
        source: where the figures come from (``measured`` for the card present).
        available_bytes: what this process may use now (measured: free memory plus what it
            holds); None offline.
        conv_kernels_bytes: more context for a network of many convolutions, whose cuDNN
            kernels load lazily as they are first used: for a context measured before any
            real network ran (:func:`probe`); 0 where the context was read off training
            processes (kernels included).
    """

    name: str
    memory_bytes: int | None
    context_bytes: int
    compute_capability: tuple[int, int]
    bf16: bool
    description: str
    source: str = ""
    available_bytes: int | None = None
    conv_kernels_bytes: int = 0

    @property
    def process_context_bytes(self) -> int:
        """What a process running a network holds outside the caching allocator: the context
        and the convolution kernels it loads (``Plan.context_bytes``; inference counts the
        same)."""
        return self.context_bytes + self.conv_kernels_bytes

    @property
    def cublas_workspace_bytes(self) -> int:
        """cuBLAS workspace of one handle on this GPU."""
        if self.compute_capability == (9, 0):
            return CUBLAS_WORKSPACE_BYTES_SM90
        return CUBLAS_WORKSPACE_BYTES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuProfile:
        kw = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        kw["compute_capability"] = tuple(kw.get("compute_capability", (7, 5)))
        return cls(**kw)


def _gib(x: float) -> int:
    return int(round(x * GIB))


# Offline profiles. Total: the median of what PyTorch reported for the card on Linux (newest
# drivers where they differ). Context: the median non-PyTorch memory of training processes in
# PyTorch >= 2.1 out-of-memory messages ("this process has X in use" less what PyTorch
# allocated and reserved), which includes the kernels loaded so far; where no report names the
# card, a card of the same architecture's (said in ``source``). Every report:
# benchmarks/data/gpu_capacity_and_context.{csv,md}.
PROFILES: dict[str, GpuProfile] = {p.name: p for p in (
    GpuProfile("generic", None, _gib(0.49), (7, 5), False,
               "any CUDA GPU: fp16 autocast, the largest context seen on a single card",
               "context: the largest single-card median (A100 40 GB, L40: 0.49 GiB)"),
    GpuProfile("gtx1650-4gb", _gib(3.81), _gib(0.12), (7, 5), False,
               "NVIDIA GeForce GTX 1650 4 GB (sm75)",
               "total: yolov5#285; context: T4's (sm75), none found for this card"),
    GpuProfile("rtx2060-6gb", _gib(5.79), _gib(0.12), (7, 5), False,
               "NVIDIA GeForce RTX 2060 6 GB (sm75)",
               "total: meshrcnn#92; context: T4's (sm75), none found for this card"),
    GpuProfile("rtx2070-8gb", _gib(7.79), _gib(0.12), (7, 5), False,
               "NVIDIA GeForce RTX 2070 8 GB (sm75)",
               "total: an RTX 2070 SUPER report; context: T4's (sm75), none found for this card"),
    GpuProfile("rtx3060-12gb", _gib(11.75), _gib(0.17), (8, 6), True,
               "NVIDIA GeForce RTX 3060 12 GB (sm86)",
               "total: 2 reports (11.75-11.76); context: RTX 3070's (sm86), none for this card"),
    GpuProfile("t4-16gb", _gib(14.74), _gib(0.12), (7, 5), False,
               "NVIDIA T4 16 GB (sm75, Colab)",
               "total: 7 reports (14.56-14.76; 14.56 with 2025-26 drivers); context: 4 (0.10-0.13)"),
    GpuProfile("l4-24gb", _gib(22.03), _gib(0.23), (8, 9), True,
               "NVIDIA L4 24 GB (sm89)", "total and context: evo2#190"),
    GpuProfile("rtx4090-24gb", _gib(23.64), _gib(0.44), (8, 9), True,
               "NVIDIA GeForce RTX 4090 24 GB (sm89)",
               "total: 5 reports (23.52-23.68); context: 3 (0.38-0.49)"),
    GpuProfile("a100-40gb", _gib(39.50), _gib(0.49), (8, 0), True,
               "NVIDIA A100 40 GB (sm80)", "total and context: CoSeR#10"),
    GpuProfile("a100-80gb", _gib(79.25), _gib(0.40), (8, 0), True,
               "NVIDIA A100 80 GB (sm80)",
               "total: 4 reports (79.15-79.35); context: VAREdit#6"),
    GpuProfile("h100-80gb", _gib(79.11), _gib(0.49), (9, 0), True,
               "NVIDIA H100 80 GB (sm90)",
               "total: vllm#27508; context: none for this card, A100 40 GB's and L40's (0.49)"),
)}


@dataclass(frozen=True)
class DeviceInfo:
    """What the card present says about itself (:func:`probe`); recorded in ``plan.json``.

    Attributes:
        name, index: the device's name and CUDA index.
        total_bytes, free_bytes: ``torch.cuda.mem_get_info`` after initialisation.
        reserved_bytes: the caching allocator's reserve at that moment.
        process_bytes: what this process uses on the card (NVML, else the card's used memory).
        context_bytes: ``process_bytes - reserved_bytes``: outside the caching allocator.
        compute_capability, bf16: the architecture; bf16 tensor cores from sm80.
        torch, cuda: versions; module_loading: ``CUDA_MODULE_LOADING`` (PyTorch sets LAZY).
        nvml: whether NVML gave the process's own usage.
        reading: how the process's usage was read (NVML and how it found this process, or
            the card's used memory).
    """

    name: str
    index: int
    total_bytes: int
    free_bytes: int
    reserved_bytes: int
    process_bytes: int
    context_bytes: int
    compute_capability: tuple[int, int]
    bf16: bool
    torch: str
    cuda: str | None
    module_loading: str
    nvml: bool
    reading: str = ""

    def profile(self) -> GpuProfile:
        """The profile the planner uses for this card (its measured context and room)."""
        return GpuProfile(
            name=f"{self.name} (measured)", memory_bytes=self.total_bytes,
            context_bytes=self.context_bytes, compute_capability=self.compute_capability,
            bf16=self.bf16, description=f"{self.name}, cuda:{self.index}", source="measured",
            available_bytes=self.free_bytes + self.process_bytes,
            conv_kernels_bytes=CONV_KERNELS_BYTES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceInfo:
        """The figures ``to_dict`` wrote (other keys are ignored)."""
        kw = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        kw["compute_capability"] = tuple(kw["compute_capability"])
        return cls(**kw)


#: How ``probe`` read this process's usage when NVML could not name it.
CARD_USED = ("the card's used memory (NVML could not name this process, or nvidia-ml-py is "
             "absent: every other process on the card counts as this one's context)")


def nvml_usage(index: int) -> tuple[int, str] | None:
    """This process's memory on ``cuda:index`` according to NVML (``pip install
    snugtune[gpu]``: nvidia-ml-py), and how the process was found; None where NVML cannot say."""
    try:
        import pynvml  # optional: NVML tells this process's usage apart from other processes'
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = _nvml_handle(pynvml, index)
        procs = [p for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.usedGpuMemory]
    except Exception as e:  # noqa: BLE001 - NVML may be absent from a container: fall back
        log.debug("NVML unavailable (%s): the card's used memory stands for this process's", e)
        return None
    return own_usage([(int(p.pid), int(p.usedGpuMemory)) for p in procs], own_pids())


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML's handle of the device torch calls ``cuda:index``: by its UUID (so that
    ``CUDA_VISIBLE_DEVICES`` and CUDA's device order, fastest first by default, both apply),
    else by ``torch.cuda._get_nvml_device_index`` (``CUDA_VISIBLE_DEVICES`` only)."""
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
    if uuid:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(
                uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        except pynvml.NVMLError as e:
            log.debug("NVML does not know UUID %s (%s): mapping the index", uuid, e)
    return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(index))


def own_pids(status: Path = Path("/proc/self/status")) -> set[int]:
    """This process's PIDs: ``os.getpid()`` and its PID in every namespace ``/proc`` shows
    (``NSpid``: the host's too when the container sees the host's /proc)."""
    pids = {os.getpid()}
    try:
        for line in status.read_text().splitlines():
            if line.startswith("NSpid:"):
                pids.update(int(x) for x in line.split()[1:])
    except (OSError, ValueError):
        pass
    return pids


def own_usage(procs: list[tuple[int, int]], pids: set[int]) -> tuple[int, str] | None:
    """(bytes, how found) of this process among NVML's ``(pid, used bytes)`` on the card.

    NVML lists host PIDs; inside a container's PID namespace this process's own PID differs.
    Then, if the card runs one process only, that process is this one (it holds a context
    there); with several, NVML cannot say which (None: the caller falls back, and says so).
    """
    for pid, used in procs:
        if pid in pids:
            return used, "NVML (this process)"
    if len(procs) == 1:
        return procs[0][1], ("NVML (the card's only process: this one, under another PID "
                             "namespace's number)")
    return None


@torch.enable_grad()  # a backward, even when the caller (predict in no_grad) turned grad off
def _initialise(dev: torch.device) -> None:
    """Load what a training step loads: a cuBLAS handle (matmul) and cuDNN (convolution
    forward and backward, a 3x3 and a 1x1)."""
    a = torch.ones(256, 256, device=dev)
    (a @ a).sum().item()
    x = torch.ones(2, 8, 16, 16, device=dev, requires_grad=True)
    for k in (3, 1):
        w = torch.ones(8, 8, k, k, device=dev, requires_grad=True)
        F.conv2d(x, w, padding=k // 2).sum().backward()
    torch.cuda.synchronize(dev)


def probe(device: torch.device | None = None) -> DeviceInfo:
    """Ask the CUDA device what it is and what this process holds on it (see module doc).

    Raises:
        ConfigError: no CUDA device is visible.
    """
    if not torch.cuda.is_available():
        raise ConfigError("--gpu auto on CUDA: no CUDA device is visible; name a profile "
                          f"(--gpu {', '.join(PROFILES)}) or plan for the CPU")
    index = torch.cuda.current_device() if device is None or device.index is None else device.index
    dev = torch.device("cuda", index)
    _initialise(dev)
    free, total = torch.cuda.mem_get_info(dev)
    reserved = int(torch.cuda.memory_reserved(dev))
    usage = nvml_usage(index)
    process, reading = usage if usage is not None else (total - free, CARD_USED)
    props = torch.cuda.get_device_properties(dev)
    cc = (int(props.major), int(props.minor))
    info = DeviceInfo(
        name=str(props.name), index=index, total_bytes=int(total), free_bytes=int(free),
        reserved_bytes=reserved, process_bytes=int(process),
        context_bytes=max(0, int(process) - reserved), compute_capability=cc, bf16=cc >= (8, 0),
        torch=str(torch.__version__), cuda=torch.version.cuda,
        module_loading=os.environ.get("CUDA_MODULE_LOADING", "LAZY"), nvml=usage is not None,
        reading=reading)
    log.info("%s: %.2f GiB, %.2f GiB free, context %.0f MiB (from %s)", info.name, total / GIB,
             free / GIB, info.context_bytes / MIB, reading)
    return info


def calibration_dir() -> Path:
    """Where calibrated profiles are kept: ``$SNUGTUNE_GPU_PROFILES`` or ~/.cache/snugtune/gpus."""
    env = os.environ.get(CALIBRATION_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snugtune" / "gpus"


def save_calibration(name: str, info: DeviceInfo) -> Path:
    """Keep a card's measured profile under ``name`` for later offline plans (``--gpu name``);
    its source says how the context was read (without NVML it may hold other processes')."""
    if not info.nvml:
        log.warning("calibrating %s without NVML's view of this process: its context (%.0f MiB) "
                    "includes whatever other processes hold on the card. Install nvidia-ml-py "
                    "(pip install snugtune[gpu]) or calibrate on an idle card", name,
                    info.context_bytes / MIB)
    profile = replace(info.profile(), name=name, available_bytes=None,
                      source=f"calibrated on {info.name} with torch {info.torch}, CUDA "
                             f"{info.cuda}; context from {info.reading or 'NVML'}")
    return write_json(calibration_dir() / f"{name}.json",
                      {"profile": profile.to_dict(), "device": info.to_dict()})


def _calibrated(name: str) -> GpuProfile | None:
    path = calibration_dir() / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return GpuProfile.from_dict(json.loads(path.read_text(encoding="utf-8"))["profile"])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable calibration %s (%s)", path, e)
        return None


def get_gpu_profile(name: str) -> GpuProfile:
    """The profile called ``name``: a calibration saved under that name, else a built-in one
    (``auto`` offline: the generic profile).

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    key = name.lower()
    if key == "auto":
        return PROFILES["generic"]
    calibrated = _calibrated(key)
    if calibrated is not None:
        return calibrated
    try:
        return PROFILES[key]
    except KeyError:
        raise ConfigError(f"--gpu: unknown GPU {name!r}; use auto (the card present), one of "
                          f"{', '.join(PROFILES)}, or a name saved by snugtune calibrate") from None


def resolve_gpu(name: str, device_type: str) -> tuple[GpuProfile, DeviceInfo | None]:
    """The profile a plan for ``device_type`` uses, and the card's own figures when asked.

    ``auto`` on a machine with CUDA asks the card (:func:`probe`); offline it is the generic
    profile. A name is a calibration or a built-in profile (:func:`get_gpu_profile`).
    """
    if device_type == "cuda" and name.lower() == "auto" and torch.cuda.is_available():
        info = probe()
        return info.profile(), info
    return get_gpu_profile(name), None
