"""LocoWorld: a procedural text-to-image world whose attributes can be read back exactly.

Importing this package is cheap: nothing is loaded until a function or class is used.
"""

from loco_lightning.data.world.captions import Caption, caption_for, fact_target, sample_caption
from loco_lightning.data.world.dataset import WorldDataset, sample_concept_scene
from loco_lightning.data.world.readers import AttributeReader, ShapeStyleNet, read_colour
from loco_lightning.data.world.render import Scene, render, sample_scene
from loco_lightning.data.world.vocab import (
    ATTRIBUTES,
    DEFAULT_VOCAB_PATH,
    Template,
    Vocabulary,
    default_vocabulary,
)

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_VOCAB_PATH",
    "AttributeReader",
    "Caption",
    "Scene",
    "ShapeStyleNet",
    "Template",
    "Vocabulary",
    "WorldDataset",
    "caption_for",
    "default_vocabulary",
    "fact_target",
    "read_colour",
    "render",
    "sample_caption",
    "sample_concept_scene",
    "sample_scene",
]
