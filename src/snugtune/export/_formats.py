"""Writers for each export format, and the checks that the written file computes the same.

Each writer takes the eval-mode classifier and an example batch (B, 3, H, W) and writes one
file; each checker loads the file back the way a deployment would and returns the largest
absolute difference of its logits from PyTorch's on the given inputs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from snugtune.errors import SnugtuneError

__all__ = ["ExportError", "WRITERS", "CHECKERS", "onnx_session"]

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "logits"
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a file at 2 GiB: weights go beside it above this


class ExportError(SnugtuneError):
    """An export could not be written, or the written model does not match PyTorch's."""


def _onnx_dynamo(model: nn.Module, example: Tensor, path: Path, external: bool) -> dict[str, Any]:
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=external, verbose=False)
    opset = getattr(getattr(program, "model", None), "opset_imports", {}).get("", None)
    return {"exporter": "torch.export (dynamo)", "opset": opset}


def _onnx_legacy(model: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    opset = 17
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice of the TorchScript-based exporter
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=opset, dynamo=False)
    return {"exporter": "torchscript (legacy)", "opset": opset}


def write_onnx(model: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    """ONNX with a dynamic batch axis: the torch.export-based exporter when onnxscript is
    installed (PyTorch's default since 2.9), else the TorchScript-based one."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        log.info("onnxscript is not installed: using the legacy TorchScript-based ONNX exporter")
        return _onnx_legacy(model, example, path)
    return _onnx_dynamo(model, example, path, external=size > EXTERNAL_DATA_BYTES)


def write_torchscript(model: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    """A traced TorchScript module (``torch.jit.load`` needs no snugtune or timm)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream; still loadable
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path))
    return {"exporter": "torch.jit.trace"}


def write_safetensors(model: nn.Module, example: Tensor, path: Path) -> dict[str, Any]:
    """The state dict (contiguous, CPU); rebuild with the card's backbone and head."""
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path))
    return {"exporter": "safetensors"}


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for ``path``.

    Raises:
        ExportError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("onnxruntime is not installed; pip install 'snugtune[export]' "
                          "(onnx, onnxruntime) to check and run ONNX models") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _reference(model: nn.Module, x: Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).float().cpu().numpy()  # (B, C)


def _worst(batches: list[Tensor], model: nn.Module, run: Any) -> float:
    """Largest |logits difference| over ``batches``, each run whole (B varies: dynamic axis)."""
    return max(float(np.abs(np.asarray(run(x)) - _reference(model, x)).max()) for x in batches)


def check_onnx(path: Path, model: nn.Module, batches: list[Tensor]) -> float:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return _worst(batches, model, lambda x: session.run(None, {name: x.numpy()})[0])


def check_torchscript(path: Path, model: nn.Module, batches: list[Tensor]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return _worst(batches, model, lambda x: _reference(loaded, x))


def check_safetensors(path: Path, model: nn.Module, batches: list[Tensor]) -> float:
    """Load the file strictly into a copy whose floats were set to NaN (so every tensor must
    come from the file), then compare logits."""
    rebuilt = copy.deepcopy(model)
    with torch.no_grad():
        for t in rebuilt.state_dict().values():
            if t.is_floating_point():
                t.fill_(float("nan"))
    try:
        rebuilt.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        raise ExportError(f"{path} does not load into the model: {str(e).splitlines()[0]}") from e
    return _worst(batches, model, lambda x: _reference(rebuilt.eval(), x))


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "safetensors": write_safetensors}
CHECKERS = {"onnx": check_onnx, "torchscript": check_torchscript, "safetensors": check_safetensors}
