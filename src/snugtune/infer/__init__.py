"""Use a trained model: a run folder (PyTorch) or an exported ONNX file (onnxruntime).

::

    load_run(RUN)                 -> (Classifier in eval mode, model card)
    predict(RUN or FILE.onnx, images_or_folders, top_k=3) -> [Prediction]
    evaluate_run(RUN, DATA?)      -> ClassificationReport (DATA: the run's validation split)
"""

from snugtune.infer.onnx import OnnxModel, is_onnx_model, onnx_session
from snugtune.infer.predictions import Prediction, image_files, top_k_predictions
from snugtune.infer.run import evaluate_run, load_run, predict, predict_samples

__all__ = [
    "OnnxModel",
    "Prediction",
    "evaluate_run",
    "image_files",
    "is_onnx_model",
    "load_run",
    "onnx_session",
    "predict",
    "predict_samples",
    "top_k_predictions",
]
