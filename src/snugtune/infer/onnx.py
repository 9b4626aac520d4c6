"""An exported ONNX classifier with its model card, run by onnxruntime (no PyTorch model).

Images are preprocessed by the same code as in the PyTorch path (``eval_transform``; with
``tta``, the views of ``snugtune.infer.tta``), so both paths agree within float tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snugtune.data import eval_transform, load_image
from snugtune.errors import CheckpointError, ExportError
from snugtune.infer.predictions import Prediction, top_k_predictions
from snugtune.infer.tta import average_views, expand_views, view_transform
from snugtune.report import read_model_card
from snugtune.rundir import card_path_for

__all__ = ["OnnxModel", "is_onnx_model", "onnx_session"]


def is_onnx_model(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (rather than a run folder)."""
    return Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir()


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session for ``path``.

    Raises:
        ExportError: onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort  # optional: the 'export' extra
    except ImportError as e:
        raise ExportError("onnxruntime is not installed; pip install 'snugtune[export]' "
                          "(onnx, onnxruntime) to check and run ONNX models") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """``model.onnx`` plus ``model.onnx.json``: preprocess images and return probabilities.

    Raises:
        CheckpointError: the file or its card is missing or is not a snugtune model card.
        ExportError: onnxruntime is not installed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        card_path = card_path_for(self.path)
        if not self.path.is_file() or not card_path.is_file():
            raise CheckpointError(f"{self.path}: an exported model needs the file and its card "
                                  f"{card_path.name} beside it; export again with snugtune export")
        try:
            self.card: dict[str, Any] = dict(read_model_card(card_path))
        except (ValueError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{card_path}: {e}") from e
        self.classes: list[str] = [str(c) for c in self.card["classes"]]  # type: ignore[union-attr]
        self.session = onnx_session(self.path)
        self._input = self.session.get_inputs()[0].name

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) preprocessed float32 images -> (B, C) softmax probabilities."""
        logits = np.asarray(self.session.run(None, {self._input: x.astype(np.float32)})[0])
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]

    def file_probabilities(self, files: Sequence[str | Path], *, batch_size: int = 32,
                           tta: bool = False) -> torch.Tensor:
        """(N, C) probabilities of image files, preprocessed as in training's evaluation;
        ``tta``: the mean over the test-time views (``snugtune.infer.tta``), run view after
        view per batch."""
        pre = self.card["preprocessing"]
        tf, size = (view_transform(pre) if tta else eval_transform(pre)), int(pre["size"])
        probs = []
        step = max(1, batch_size)
        for i in range(0, len(files), step):
            x = torch.stack([tf(load_image(f, draft_size=size)) for f in files[i : i + step]])
            if tta:  # x: (b, 2, 3, H, W)
                views = [torch.from_numpy(self.probabilities(v.contiguous().numpy()))
                         for v in expand_views(x)]
                probs.append(average_views(views))
            else:
                probs.append(torch.from_numpy(self.probabilities(x.numpy())))  # (b, C)
        return torch.cat(probs) if probs else torch.empty(0, len(self.classes))

    def predict(self, files: Sequence[str | Path], *, top_k: int = 1,
                batch_size: int = 32, tta: bool = False) -> list[Prediction]:
        """Top-k ``Prediction`` per image file (``tta``: see ``file_probabilities``)."""
        matrix = self.file_probabilities(files, batch_size=batch_size, tta=tta)
        return top_k_predictions([str(f) for f in files], matrix, self.classes, top_k)
