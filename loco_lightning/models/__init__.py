"""Model families, loading, miniatures and the builders of LocoWorld models."""

from loco_lightning.models.families import FAMILIES, Family, get_family
from loco_lightning.models.pipeline import Conditioning, LocoModel, WeightsNotFoundError, load_model

__all__ = [
    "FAMILIES",
    "Conditioning",
    "Family",
    "LocoModel",
    "WeightsNotFoundError",
    "get_family",
    "load_model",
]
