"""Editing baselines to compare LocoEdit against: fine-tuned (ESD-x, Concept Ablation) and closed
form (Diff-QuickFix), and the module that evaluates every method side by side."""

from loco_lightning.baselines.ablation import ConceptAblationModule
from loco_lightning.baselines.compare import CompareModule
from loco_lightning.baselines.esd import ESDModule
from loco_lightning.baselines.finetune import FineTuneEdit
from loco_lightning.baselines.quickfix import QuickFixModule, QuickFixParams, apply_quickfix

__all__ = [
    "CompareModule",
    "ConceptAblationModule",
    "ESDModule",
    "FineTuneEdit",
    "QuickFixModule",
    "QuickFixParams",
    "apply_quickfix",
]
