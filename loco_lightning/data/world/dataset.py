"""`WorldDataset`: an endless, deterministic stream of LocoWorld (image, caption) training pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from loco_lightning.data.world.captions import draw_caption
from loco_lightning.data.world.render import Scene, render, sample_scene
from loco_lightning.data.world.vocab import ATTRIBUTES, Vocabulary, default_vocabulary

NAMED_KINDS = ("artist", "trademark", "country")


def sample_concept_scene(
    kind: str, rng: np.random.Generator, vocab: Vocabulary, jitter: float = 1.0
) -> tuple[Scene, str | None]:
    """Draw a scene of one caption kind and, for named kinds, the concept that produces it.

    Artists fix the style, trademarks every attribute, countries the emblem (always filled).
    """
    if kind == "plain":
        return sample_scene(rng, vocab, jitter), None
    names = sorted(
        {"artist": vocab.artists, "trademark": vocab.trademarks, "country": vocab.countries}[kind]
    )
    name = names[rng.integers(len(names))]
    if kind == "artist":
        fixed = {"style": vocab.artists[name]}
    elif kind == "trademark":
        fixed = vars(vocab.trademarks[name])
    else:
        fixed = {**vars(vocab.countries[name].emblem), "style": "filled"}
    return sample_scene(rng, vocab, jitter, **fixed), name


class WorldDataset(Dataset):
    """LocoWorld training pairs; item `i` depends only on `(seed, i)`, never on worker or order.

    Items are dicts: `image` (3, size, size) float in [-1, 1]; `caption` str; `shape`, `colour`,
    `style` int indices into the vocabulary; `<attribute>_dropped` bool, True when the caption
    leaves that attribute to the model's prior; `kind` ("plain", "artist", "trademark",
    "country") and `concept` (the named concept or ""); with `variants`, also `variants`: one
    caption per entry, with that entry's attributes removed as well (same removal rule).

    Args:
        length: number of items (an epoch).
        seed: the stream's seed; different seeds give independent streams.
        size: image side in pixels.
        vocab: a `Vocabulary`, a path to a vocabulary YAML, or None for the packaged one.
        named_p: fraction of named-concept captions, split evenly over artist/trademark/country.
        drop_p: per-attribute caption dropout, so attribute-removed prompts are in distribution.
        empty_p: fraction of empty captions (the unconditional branch of guidance).
        jitter: pose noise scale (0 = canonical pose), see `sample_scene`.
        held_out: use only the held-out paraphrase templates (generality evaluation).
        variants: attribute sets; each adds a caption with those attributes also removed (planted
            training shows some UNet sites the caption without an attribute).
    """

    def __init__(
        self,
        length: int = 100_000,
        seed: int = 0,
        size: int = 16,
        vocab: Vocabulary | str | Path | None = None,
        named_p: float = 0.15,
        drop_p: float = 0.2,
        empty_p: float = 0.1,
        jitter: float = 1.0,
        held_out: bool = False,
        variants: Sequence[Sequence[str]] = (),
    ) -> None:
        for label, p in (("named_p", named_p), ("drop_p", drop_p), ("empty_p", empty_p)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{label}={p} must be a probability in [0, 1]")
        if isinstance(vocab, (str, Path)):
            vocab = Vocabulary.from_yaml(vocab)
        self.vocab = vocab or default_vocabulary()
        self.length, self.seed, self.size, self.jitter = length, seed, size, jitter
        self.named_p, self.drop_p, self.empty_p, self.held_out = named_p, drop_p, empty_p, held_out
        self.variants = tuple(tuple(v) for v in variants)
        unknown = {a for v in self.variants for a in v} - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"variants name {sorted(unknown)}; attributes are {ATTRIBUTES}")
        self._kind_p = np.array([1.0 - named_p] + [named_p / len(NAMED_KINDS)] * len(NAMED_KINDS))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for WorldDataset of length {self.length}")
        rng = np.random.default_rng([self.seed, index])
        kind = ("plain", *NAMED_KINDS)[rng.choice(len(self._kind_p), p=self._kind_p)]
        scene, name = sample_concept_scene(kind, rng, self.vocab, self.jitter)
        caption, drop = draw_caption(
            scene, rng, kind, name, self.drop_p, self.empty_p, self.held_out, self.vocab
        )
        undetermined = frozenset(ATTRIBUTES) if caption is None else caption.undetermined(drop)
        image = torch.from_numpy(render(scene, self.size, self.vocab)).permute(2, 0, 1)
        text = "" if caption is None else caption.text(drop)
        item = {"image": image.float() / 127.5 - 1.0, "caption": text, "kind": kind}
        item["concept"] = name or ""
        if self.variants:
            item["variants"] = [
                "" if caption is None else caption.text(drop | set(v)) for v in self.variants
            ]
        for attribute in ATTRIBUTES:
            item[attribute] = self.vocab.index(attribute, getattr(scene, attribute))
            item[f"{attribute}_dropped"] = attribute in undetermined
        return item
