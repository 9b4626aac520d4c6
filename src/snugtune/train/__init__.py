"""Training: phases, the OOM-recovering step loop, checkpoints and resume, inference."""

from snugtune.train.inference import Prediction, evaluate_run, load_run, predict
from snugtune.train.runner import TrainResult, resume, train

__all__ = ["Prediction", "TrainResult", "evaluate_run", "load_run", "predict", "resume", "train"]
