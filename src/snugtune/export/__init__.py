"""Export a trained run for deployment, each format checked against the run.

::

    snugtune export RUN --format onnx|pt2|safetensors [--output FILE]
    snugtune export RUN --format timm [--output DIR]  # timm.create_model("local-dir:DIR", ...)
    snugtune predict RUN/export/model.onnx img.jpg      # reads model.onnx.json beside it

Every export writes ``FILE`` and its model card ``FILE.json`` (classes in label order, the
preprocessing as numbers and as steps, the input/output names and shapes, the file's SHA-256,
and the check below). Defaults: ``RUN/export/model.onnx``, ``model.pt2`` (a ``torch.export``
program, which replaces TorchScript, deprecated in the PyTorch this project pins) and
``model.safetensors``. ``timm`` writes the folder ``RUN/export/timm/`` in the layout of a timm
model on the Hugging Face Hub: ``config.json`` (the classes as label_names, the preprocessing
as timm's pretrained_cfg), ``model.safetensors`` under timm's key names and ``README.md``, the
Hub's model card; for a timm backbone with snugtune's plain linear head only (``export._timm``).

Before a file is published it is loaded back the way a deployment would load it
(onnxruntime, ``torch.export.load``, safetensors) and run on real images of the run's
validation split, preprocessed as ``predict`` does, as one batch and as a batch of 1 (the batch
axis is dynamic); the largest logit difference from PyTorch must be at most ``TOLERANCE``
(1e-4), or the export fails and writes nothing. ONNX uses PyTorch's torch.export-based
exporter; the timm folder is loaded by ``timm.create_model("local-dir:...", pretrained=True)``.
"""

from snugtune.export._run import DEFAULT_NAMES, FORMATS, TOLERANCE, ExportResult, export_run

__all__ = ["DEFAULT_NAMES", "FORMATS", "TOLERANCE", "ExportResult", "export_run"]
