"""Writers for each export format, and the checks that the written file computes the same.

Each writer takes the eval-mode classifier, an example batch (B, 3, H, W) and the run's model
card (classes, preprocessing, where the weights came from), and writes one file (timm: the
folder's ``model.safetensors``, its ``config.json`` beside it); each checker loads the file
back the way a deployment would and returns the largest absolute difference of its logits
from PyTorch's on the given inputs.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from snugtune.errors import ExportError
from snugtune.export._timm import WEIGHTS, load_folder, timm_model, write_folder
from snugtune.infer import onnx_session
from snugtune.models import Classifier

__all__ = ["CHECKERS", "TOLERANCE", "WRITERS"]

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max |logit difference| an export may show against PyTorch
INPUT, OUTPUT = "input", "logits"
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a file at 2 GiB: weights go beside it above this
MAX_BATCH = 65536


def write_onnx(model: nn.Module, example: Tensor, path: Path,
               card: Mapping[str, Any]) -> dict[str, Any]:
    """ONNX with a dynamic batch axis, by PyTorch's torch.export-based exporter (its default
    since 2.9; it needs onnxscript, part of the 'export' extra).

    Raises:
        ExportError: onnxscript is not installed.
    """
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError("ONNX export needs onnxscript; pip install 'snugtune[export]' "
                          "(onnx, onnxscript, onnxruntime), or use --format pt2 or safetensors")
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(
            model, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
            dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=external, verbose=False)
    opset = getattr(getattr(program, "model", None), "opset_imports", {}).get("", None)
    return {"exporter": "torch.export (dynamo)", "opset": opset}


def write_pt2(model: nn.Module, example: Tensor, path: Path,
              card: Mapping[str, Any]) -> dict[str, Any]:
    """A ``torch.export`` program with a dynamic batch axis (``torch.export.load(f).module()``
    runs it without snugtune or timm; it replaces TorchScript, deprecated in PyTorch 2.10+)."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return {"exporter": "torch.export"}


def write_safetensors(model: nn.Module, example: Tensor, path: Path,
                      card: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict (contiguous, CPU); rebuild with the card's backbone and head."""
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path))
    return {"exporter": "safetensors"}


def write_timm(model: nn.Module, example: Tensor, path: Path,
               card: Mapping[str, Any]) -> dict[str, Any]:
    """timm's model for the classifier, its weights at ``path`` (``model.safetensors``) and
    timm's ``config.json`` beside it (see ``export._timm``).

    Raises:
        ExportError: the model is not timm's architecture plus a linear classifier.
    """
    if not isinstance(model, Classifier):
        raise ExportError(f"--format timm exports a snugtune classifier, not a {type(model).__name__}")
    net = timm_model(model, example, tolerance=TOLERANCE)
    if path.name != WEIGHTS:
        raise ExportError(f"--format timm writes {WEIGHTS} into a folder, not {path.name}")
    return write_folder(net, path.parent, card)


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


def check_pt2(path: Path, model: nn.Module, batches: list[Tensor]) -> float:
    loaded = torch.export.load(str(path)).module()
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


def check_timm(path: Path, model: nn.Module, batches: list[Tensor]) -> float:
    """Load the folder holding ``path`` as a timm user would (``local-dir:``), compare logits."""
    loaded = load_folder(path.parent)
    return _worst(batches, model, lambda x: _reference(loaded, x))


Writer = Callable[[nn.Module, Tensor, Path, Mapping[str, Any]], dict[str, Any]]
Checker = Callable[[Path, nn.Module, list[Tensor]], float]
WRITERS: dict[str, Writer] = {"onnx": write_onnx, "pt2": write_pt2, "safetensors": write_safetensors,
                              "timm": write_timm}
CHECKERS: dict[str, Checker] = {"onnx": check_onnx, "pt2": check_pt2,
                                "safetensors": check_safetensors, "timm": check_timm}
