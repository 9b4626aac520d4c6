"""The fine-tuning recipe (:mod:`.finetune`, read it top to bottom) and its parts: setup and
plan (:mod:`.setup`), a phase's inputs and the feature cache (:mod:`.inputs`, :mod:`.cache`),
how long phases train (:mod:`.timing`), the flips decision (:mod:`.flips`), checkpoints
(:mod:`.checkpoint`), data-parallel processes (:mod:`.distributed`), the run's state
(:mod:`.state`) and outputs (:mod:`.outputs`), the backbone race of ``--model auto``
(:mod:`.race`); beside it, the learning-rate range test (:mod:`.lr_range`)."""

from snugtune.recipe.finetune import TrainResult, resume, train
from snugtune.recipe.lr_range import LRFind, lr_find
from snugtune.recipe.race import Entrant, Race, plan_candidates
from snugtune.recipe.setup import diagnose_folder, plan_folder

__all__ = ["Entrant", "LRFind", "Race", "TrainResult", "diagnose_folder", "lr_find",
           "plan_candidates", "plan_folder", "resume", "train"]
