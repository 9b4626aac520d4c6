"""Export a trained run for deployment, each format checked against the run.

::

    snugtune export RUN --format onnx|pt2|safetensors [--output FILE]
    snugtune predict RUN/export/model.onnx img.jpg      # reads model.onnx.json beside it

Every export writes ``FILE`` and its model card ``FILE.json`` (classes in label order, the
preprocessing as numbers and as steps, the input/output names and shapes, the file's SHA-256,
and the check below). Defaults: ``RUN/export/model.onnx``, ``model.pt2`` (a ``torch.export``
program, which replaces TorchScript, deprecated in the PyTorch this project pins) and
``model.safetensors``.

Before a file is published it is loaded back the way a deployment would load it
(onnxruntime, ``torch.export.load``, safetensors) and run on real images of the run's
validation split, preprocessed as ``predict`` does, as one batch and as a batch of 1 (the batch
axis is dynamic); the largest logit difference from PyTorch must be at most ``TOLERANCE``
(1e-4), or the export fails and writes nothing. ONNX uses PyTorch's torch.export-based
exporter.
"""

from snugtune.export._run import DEFAULT_NAMES, FORMATS, TOLERANCE, ExportResult, export_run

__all__ = ["DEFAULT_NAMES", "FORMATS", "TOLERANCE", "ExportResult", "export_run"]
