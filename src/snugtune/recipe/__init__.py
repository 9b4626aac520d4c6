"""The fine-tuning recipe (:mod:`.finetune`, read it top to bottom) and its parts: setup and
plan (:mod:`.setup`), a phase's inputs and the feature cache (:mod:`.inputs`, :mod:`.cache`),
checkpoints (:mod:`.checkpoint`), data-parallel processes (:mod:`.distributed`), the run's
state (:mod:`.state`) and outputs (:mod:`.outputs`)."""

from snugtune.recipe.finetune import TrainResult, resume, train
from snugtune.recipe.setup import plan_folder

__all__ = ["TrainResult", "plan_folder", "resume", "train"]
