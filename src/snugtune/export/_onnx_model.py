"""An exported ONNX classifier with its model card, run by onnxruntime (no PyTorch model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snugtune.errors import CheckpointError
from snugtune.export._formats import onnx_session
from snugtune.export._run import card_path_for

__all__ = ["OnnxModel", "is_onnx_model"]


def is_onnx_model(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX file (rather than a run folder)."""
    return Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir()


class OnnxModel:
    """``model.onnx`` plus ``model.onnx.json``: preprocess images and return probabilities.

    Raises:
        CheckpointError: the file or its card is missing or is not a snugtune model card.
        ExportError: onnxruntime is not installed.
    """

    def __init__(self, path: str | Path) -> None:
        from snugtune.report import read_model_card

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

    def predict(self, files: Sequence[str | Path], *, top_k: int = 1) -> list[Any]:
        """Top-k ``Prediction`` per image file, preprocessed as in training's evaluation."""
        from snugtune.data import load_image
        from snugtune.train.inference import Prediction, eval_transform

        pre = self.card["preprocessing"]
        tf, size = eval_transform(pre), int(pre["size"])
        k = max(1, min(top_k, len(self.classes)))
        out = []
        for f in files:
            x = tf(load_image(f, draft_size=size)).unsqueeze(0).numpy()  # (1, 3, H, W)
            p = self.probabilities(x)[0]
            top = np.argsort(-p, kind="stable")[:k]
            out.append(Prediction(str(f), tuple(self.classes[i] for i in top),
                                  tuple(float(p[i]) for i in top)))
        return out
