"""Fine-tuning baselines to compare the closed-form editors against (ESD-x, Concept Ablation),
trained with ``fit``; their saved deltas join a comparison as ``Saved`` editors."""

from loco_lightning.baselines.ablation import ConceptAblationModule
from loco_lightning.baselines.esd import ESDModule
from loco_lightning.baselines.finetune import FineTuneEdit

__all__ = ["ConceptAblationModule", "ESDModule", "FineTuneEdit"]
