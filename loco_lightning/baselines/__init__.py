"""Fine-tuning baselines to compare the closed-form editors against: one module trained with
``fit``, given its objective (ESD-x, Concept Ablation) as data; their saved deltas join a
comparison as ``Saved`` editors."""

from loco_lightning.baselines.ablation import ConceptAblation
from loco_lightning.baselines.esd import ESD
from loco_lightning.baselines.finetune import FineTune, FineTuneModule, Objective

__all__ = ["ESD", "ConceptAblation", "FineTune", "FineTuneModule", "Objective"]
