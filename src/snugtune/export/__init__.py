"""Export a trained run for deployment, and run an exported ONNX model.

::

    snugtune export RUN --format onnx|torchscript|safetensors [--out FILE]
    snugtune predict RUN/export/model.onnx img.jpg      # reads model.onnx.json beside it

Every export writes ``FILE`` and its model card ``FILE.json`` (classes in label order, the
preprocessing as numbers and as steps, the input/output names and shapes, the file's SHA-256,
and the check below). Defaults: ``RUN/export/model.onnx``, ``model.torchscript.pt``,
``model.safetensors``.

Before a file is moved into place it is loaded back the way a deployment would load it
(onnxruntime, ``torch.jit.load``, safetensors) and run on real images of the run's validation
split, preprocessed as ``predict`` does, as one batch and as a batch of 1 (the batch axis is
dynamic); the largest logit difference from PyTorch must be at most ``TOLERANCE`` (1e-4), or
the export fails and writes nothing. ONNX uses PyTorch's torch.export-based exporter when
onnxscript is installed, the TorchScript-based one otherwise.
"""

from snugtune.export._formats import ExportError
from snugtune.export._onnx_model import OnnxModel, is_onnx_model
from snugtune.export._run import (
    DEFAULT_NAMES,
    FORMATS,
    TOLERANCE,
    ExportResult,
    card_path_for,
    export_run,
)

__all__ = [
    "DEFAULT_NAMES",
    "FORMATS",
    "TOLERANCE",
    "ExportError",
    "ExportResult",
    "OnnxModel",
    "card_path_for",
    "export_run",
    "is_onnx_model",
]
