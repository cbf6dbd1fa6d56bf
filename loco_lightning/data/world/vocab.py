"""The LocoWorld vocabulary: attribute values, palette, named concepts and caption templates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

ATTRIBUTES = ("shape", "colour", "style")
TEMPLATE_KINDS = ("plain", "artist", "trademark", "country")
DEFAULT_VOCAB_PATH = Path(__file__).with_name("vocab.yaml")
SLOT_PATTERN = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class NamedObject:
    """A trademark: one fixed (shape, colour, style), so the name alone determines the image."""

    shape: str
    colour: str
    style: str


@dataclass(frozen=True)
class Emblem:
    """A country's emblem: always rendered filled, so a fact is a (shape, colour) pair."""

    shape: str
    colour: str


@dataclass(frozen=True)
class Country:
    """A fact: the emblem training teaches, and the `updated` emblem a fact edit should produce."""

    emblem: Emblem
    updated: Emblem


@dataclass(frozen=True)
class Template:
    """A caption template: `{slot}` words and `[...]` groups dropped with the slot they contain."""

    text: str
    kind: str
    held_out: bool = False

    @property
    def slots(self) -> tuple[str, ...]:
        """Slot names in order of appearance."""
        return tuple(SLOT_PATTERN.findall(self.text))


@dataclass(frozen=True)
class Vocabulary:
    """Everything a LocoWorld caption or image can contain; load with `from_yaml`.

    Attribute indices (what datasets and readers return) are positions in `shapes`, `colours`
    and `styles`.
    """

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    rgb: tuple[tuple[int, int, int], ...]
    styles: tuple[str, ...]
    removed: dict[str, str]
    artists: dict[str, str]
    trademarks: dict[str, NamedObject]
    countries: dict[str, Country]
    templates: tuple[Template, ...]

    @classmethod
    def from_yaml(cls, path: str | Path) -> Vocabulary:
        """Load and validate a vocabulary file (see the packaged `vocab.yaml` for the schema)."""
        raw = yaml.safe_load(Path(path).read_text())
        vocab = cls(
            shapes=tuple(raw["shapes"]),
            colours=tuple(raw["colours"]),
            rgb=tuple(tuple(int(c) for c in v) for v in raw["colours"].values()),
            styles=tuple(raw["styles"]),
            removed=dict(raw.get("removed", {})),
            artists=dict(raw.get("artists", {})),
            trademarks={k: NamedObject(**v) for k, v in raw.get("trademarks", {}).items()},
            countries={
                k: Country(Emblem(**v["emblem"]), Emblem(**v["updated"]))
                for k, v in raw.get("countries", {}).items()
            },
            templates=tuple(
                Template(t["text"], kind, bool(t.get("held_out", False)))
                for kind, group in raw["templates"].items()
                for t in group
            ),
        )
        vocab._validate(path)
        return vocab

    def _validate(self, path: str | Path) -> None:
        def check(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"{path}: {what}")

        for name, rgb in zip(self.colours, self.rgb):
            check(
                len(rgb) == 3 and max(rgb) > 90, f"colour {name}={rgb} needs 3 channels, max > 90"
            )
        for name, style in self.artists.items():
            check(style in self.styles, f"artist {name} has unknown style {style!r}")
        emblems = [e for c in self.countries.values() for e in (c.emblem, c.updated)]
        for obj in [*self.trademarks.values(), *emblems]:
            check(
                obj.shape in self.shapes and obj.colour in self.colours, f"unknown value in {obj}"
            )
        for name, obj in self.trademarks.items():
            check(obj.style in self.styles, f"trademark {name} has unknown style {obj.style!r}")
        for name, country in self.countries.items():
            check(country.emblem != country.updated, f"country {name}: updated emblem is unchanged")
        for t in self.templates:
            check(t.kind in TEMPLATE_KINDS, f"template kind {t.kind!r} not in {TEMPLATE_KINDS}")
            check(t.text.count("[") == t.text.count("]"), f"unbalanced [ ] in {t.text!r}")
            allowed = {*ATTRIBUTES, t.kind}
            check(set(t.slots) <= allowed, f"{t.text!r}: a {t.kind} template may use {allowed}")
            check(t.kind == "plain" or t.kind in t.slots, f"{t.text!r} lacks {{{t.kind}}}")
        for kind in TEMPLATE_KINDS:
            check(
                any(t.kind == kind and not t.held_out for t in self.templates),
                f"no {kind} template",
            )

    def values(self, attribute: str) -> tuple[str, ...]:
        """The value names of one attribute ("shape", "colour" or "style")."""
        if attribute not in ATTRIBUTES:
            raise ValueError(f"attribute {attribute!r} is not one of {ATTRIBUTES}")
        return getattr(self, attribute + "s")

    def index(self, attribute: str, value: str) -> int:
        """Index of `value` within `values(attribute)`, as datasets and readers report it."""
        return self.values(attribute).index(value)

    def templates_of(self, kind: str, held_out: bool = False) -> tuple[Template, ...]:
        """Templates of one kind, either the training ones or the held-out paraphrases."""
        return tuple(t for t in self.templates if t.kind == kind and t.held_out == held_out)

    def words(self) -> tuple[str, ...]:
        """Every word any caption (training, held-out or attribute-removed) can contain, sorted.

        This is the full vocabulary of a word-level tokenizer for the world model.
        """
        words = {*self.shapes, *self.colours, *self.styles, *self.removed.values()}
        words |= {*self.artists, *self.trademarks, *self.countries}
        for t in self.templates:
            words |= set(SLOT_PATTERN.sub(" ", t.text).replace("[", " ").replace("]", " ").split())
        return tuple(sorted(words))


@cache
def default_vocabulary() -> Vocabulary:
    """The packaged vocabulary (cached; treat as read-only)."""
    return Vocabulary.from_yaml(DEFAULT_VOCAB_PATH)
