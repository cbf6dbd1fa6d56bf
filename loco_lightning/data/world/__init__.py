"""LocoWorld: a procedural text-to-image world whose attributes can be read back exactly.

Importing this package is cheap: nothing is loaded until a function or class is used.
"""

from loco_lightning.data.world.captions import (
    Caption,
    caption_for,
    draw_caption,
    fact_target,
    sample_caption,
)
from loco_lightning.data.world.dataset import WorldDataset, sample_concept_scene
from loco_lightning.data.world.probes import (
    CONCEPT_ATTRIBUTES,
    collate_probes,
    one_attribute_off,
    probe_scores,
    probe_set,
)
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
    "CONCEPT_ATTRIBUTES",
    "DEFAULT_VOCAB_PATH",
    "AttributeReader",
    "Caption",
    "Scene",
    "ShapeStyleNet",
    "Template",
    "Vocabulary",
    "WorldDataset",
    "caption_for",
    "collate_probes",
    "default_vocabulary",
    "draw_caption",
    "fact_target",
    "one_attribute_off",
    "probe_scores",
    "probe_set",
    "read_colour",
    "render",
    "sample_caption",
    "sample_concept_scene",
    "sample_scene",
]
