"""LocoWorld captions: templates filled from a scene, with attribute removal and train-time dropout.

Removing an attribute from a caption and dropping it during training are the same operation
(`Caption.text(drop=...)`), so every attribute-removed target prompt is in the training
distribution. Removal rules, per slot:
- shape -> the word "shape"; trademark -> "shape" (an object removed leaves a generic object);
- colour, style -> omitted; artist (a style) -> its `[in the style of ...]` group omitted;
- country -> never removed (facts are *updated*, see `fact_target`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from loco_lightning.data.world.render import Scene
from loco_lightning.data.world.vocab import (
    ATTRIBUTES,
    SLOT_PATTERN,
    Template,
    Vocabulary,
    default_vocabulary,
)

# The attribute whose removal removes a slot.
SLOT_ATTRIBUTE: dict[str, str | None] = {
    "shape": "shape",
    "colour": "colour",
    "style": "style",
    "artist": "style",
    "trademark": "shape",
    "country": None,
}
# The attributes of the image that a slot's word determines.
SLOT_DETERMINES: dict[str, tuple[str, ...]] = {
    "shape": ("shape",),
    "colour": ("colour",),
    "style": ("style",),
    "artist": ("style",),
    "trademark": ATTRIBUTES,
    "country": ATTRIBUTES,
}
_GROUP = re.compile(r"\[([^\]]*)\]")


@dataclass(frozen=True)
class Caption:
    """A template filled with words; renders to text with any attributes removed.

    Attributes:
        template: the template it fills.
        values: slot -> word.
        removed_words: slot -> the word that replaces it when removed (others are omitted).
    """

    template: Template
    values: Mapping[str, str]
    removed_words: Mapping[str, str]

    def _dropped(self, drop: Collection[str]) -> set[str]:
        unknown = set(drop) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"cannot drop {sorted(unknown)}: attributes are {ATTRIBUTES}")
        return {s for s in self.template.slots if SLOT_ATTRIBUTE[s] in drop}

    def text(self, drop: Collection[str] = ()) -> str:
        """The caption with the attributes in `drop` removed (see the module docstring)."""
        dropped = self._dropped(drop)
        omitted = dropped - set(self.removed_words)
        text = _GROUP.sub(
            lambda m: "" if set(SLOT_PATTERN.findall(m[1])) & omitted else m[1], self.template.text
        )
        words = {**self.values, **{s: self.removed_words[s] for s in dropped - omitted}}
        words.update(dict.fromkeys(omitted, ""))
        return " ".join(text.format(**words).split())

    def removed(self, attribute: str) -> str:
        """The attribute-removed target prompt for this caption (LocoGen's T', LocoEdit's y)."""
        return self.text(drop=(attribute,))

    def undetermined(self, drop: Collection[str] = ()) -> frozenset[str]:
        """Attributes of the image that `text(drop)` leaves to the model's prior."""
        kept = set(self.template.slots) - self._dropped(drop)
        return frozenset(ATTRIBUTES) - {a for s in kept for a in SLOT_DETERMINES[s]}

    def __str__(self) -> str:
        return self.text()


def caption_for(
    scene: Scene, template: Template, name: str | None = None, vocab: Vocabulary | None = None
) -> Caption:
    """Fill `template` from `scene`; named kinds need the concept `name`, which must match it.

    Raises:
        ValueError: if the named concept does not produce `scene` (a caption would then lie).
    """
    vocab = vocab or default_vocabulary()
    values = {"shape": scene.shape, "colour": scene.colour, "style": scene.style}
    kind = template.kind
    if kind != "plain":
        table = {"artist": vocab.artists, "trademark": vocab.trademarks, "country": vocab.countries}
        if name not in table[kind]:
            raise ValueError(f"{kind} template needs a {kind} name from {sorted(table[kind])}")
        expected = {
            "artist": lambda: {"style": vocab.artists[name]},
            "trademark": lambda: vars(vocab.trademarks[name]),
            "country": lambda: {**vars(vocab.countries[name].emblem), "style": "filled"},
        }[kind]()
        if any(values[k] != v for k, v in expected.items()):
            raise ValueError(f"{kind} {name!r} renders {expected}, not scene {scene}")
        values[kind] = name
    values = {s: values[s] for s in template.slots}
    return Caption(template, values, {s: w for s, w in vocab.removed.items() if s in values})


def draw_caption(
    scene: Scene,
    rng: np.random.Generator,
    kind: str = "plain",
    name: str | None = None,
    drop_p: float = 0.2,
    empty_p: float = 0.1,
    held_out: bool = False,
    vocab: Vocabulary | None = None,
) -> tuple[Caption | None, frozenset[str]]:
    """A training caption before rendering to text: random template and the attributes it drops.

    Keeping the `Caption` lets a consumer remove further attributes by the same rule (planted
    training gives some UNet sites the caption with an attribute removed).

    Returns:
        The caption, or None for an empty caption, and the attributes dropped from it.
    """
    vocab = vocab or default_vocabulary()
    templates = vocab.templates_of(kind, held_out)
    caption = caption_for(scene, templates[rng.integers(len(templates))], name, vocab)
    drop = frozenset(a for a, u in zip(ATTRIBUTES, rng.random(len(ATTRIBUTES))) if u < drop_p)
    if rng.random() < empty_p:
        return None, frozenset(ATTRIBUTES)
    return caption, drop


def sample_caption(
    scene: Scene,
    rng: np.random.Generator,
    kind: str = "plain",
    name: str | None = None,
    drop_p: float = 0.2,
    empty_p: float = 0.1,
    held_out: bool = False,
    vocab: Vocabulary | None = None,
) -> tuple[str, frozenset[str]]:
    """A training caption: random template, each attribute dropped with `drop_p`, or empty.

    Returns:
        The caption text and the attributes it leaves undetermined (all of them when empty).
    """
    caption, drop = draw_caption(scene, rng, kind, name, drop_p, empty_p, held_out, vocab)
    if caption is None:
        return "", frozenset(ATTRIBUTES)
    return caption.text(drop), caption.undetermined(drop)


def fact_target(
    country: str, template: Template | None = None, vocab: Vocabulary | None = None
) -> Caption:
    """The plain caption of `country`'s updated emblem: the target prompt of a fact edit."""
    vocab = vocab or default_vocabulary()
    updated = vocab.countries[country].updated
    template = template or vocab.templates_of("plain")[0]
    return caption_for(Scene(updated.shape, updated.colour, "filled"), template, vocab=vocab)
