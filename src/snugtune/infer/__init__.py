"""Use a trained model: a run folder (PyTorch) or an exported ONNX file (onnxruntime).

::

    load_run(RUN)                 -> (Classifier in eval mode, model card)
    predict(RUN or FILE.onnx, images_or_folders, top_k=3, tta=False) -> [Prediction]
    evaluate_run(RUN, DATA?)      -> ClassificationReport (DATA: the run's validation split)
    evaluate_run(RUN, tta=True)   -> TTAReport (with TTA; ``without_tta``: the plain report)

A run's model is used under the budget it trained under (``--gpu-memory`` unless given anew),
starting at the micro-batch its training ended at (``training_limits``).

``tta=True`` averages the softmax probabilities of fixed views of each image (plain, flipped,
zoomed 1.15x and centre-cropped, zoomed and flipped): see ``snugtune.infer.tta``.
"""

from snugtune.infer.onnx import OnnxModel, is_onnx_model, onnx_session
from snugtune.infer.predictions import Prediction, image_files, top_k_predictions
from snugtune.infer.run import (
    evaluate_run,
    load_run,
    predict,
    predict_samples,
    predict_views,
    training_limits,
)
from snugtune.infer.tta import VIEWS, TTAReport, average_views, expand_views, view_transform

__all__ = [
    "VIEWS",
    "OnnxModel",
    "Prediction",
    "TTAReport",
    "average_views",
    "evaluate_run",
    "expand_views",
    "image_files",
    "is_onnx_model",
    "load_run",
    "onnx_session",
    "predict",
    "predict_samples",
    "predict_views",
    "top_k_predictions",
    "training_limits",
    "view_transform",
]
