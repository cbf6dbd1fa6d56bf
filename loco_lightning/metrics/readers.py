"""Exact attribute readers as a torchmetrics ``Metric``: does the image show the expected values?"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import Metric


class AttributeMatch(Metric):
    """Fraction of images whose read attributes all equal the expected values.

    Args:
        reader: module whose ``read(images in [-1, 1]) -> {attribute: (B,) index}`` is exact on
            the world (injected, so the metric knows nothing of the world's vocabulary files).
        values: the names of each attribute's indices, e.g. ``{"shape": ("circle", ...)}``.
    """

    full_state_update = False

    def __init__(self, reader: nn.Module, values: dict[str, tuple[str, ...]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.reader = reader
        self.values = values
        self.add_state("hits", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    @torch.no_grad()
    def scores(self, images: Tensor, expects: list[dict[str, str]]) -> Tensor:
        """(B,) 1.0 where every expected attribute is read back, else 0.0 (no state changes).

        Args:
            images: (B, 3, H, W) in [0, 1].
            expects: per image, attribute -> expected value name.
        """
        read = self.reader.read(images * 2 - 1)
        hits = torch.ones(len(expects), device=images.device)
        for b, expect in enumerate(expects):
            for attribute, value in expect.items():
                if attribute not in self.values:
                    raise KeyError(
                        f"Unknown attribute {attribute!r} in expect; readable: {list(self.values)}"
                    )
                if value not in self.values[attribute]:
                    known = self.values[attribute]
                    raise KeyError(f"{value!r} is not a {attribute}; known: {known}")
                if self.values[attribute][int(read[attribute][b])] != value:
                    hits[b] = 0.0
        return hits

    def update(self, images: Tensor, expects: list[dict[str, str]]) -> None:
        hits = self.scores(images, expects)
        self.hits += hits.sum()
        self.total += len(expects)

    def compute(self) -> Tensor:
        return self.hits / self.total.clamp(min=1)


def world_match(world: dict | None) -> AttributeMatch | None:
    """Exact-reader matching for a world model (its ``loco_world.json`` record), else None.

    Only models that carry readers can be judged exactly; every other model gets CLIP alone.
    """
    if world is None:
        return None
    from loco_lightning.data.world.readers import AttributeReader

    reader = AttributeReader.from_world(world["folder"], world["world"])
    return AttributeMatch(reader, reader.values)
