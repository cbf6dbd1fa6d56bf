"""Prompt pairs: an original prompt that carries a concept and a target prompt without it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class PromptPair:
    """``original`` carries the concept; ``target`` has it removed (style, object) or updated.

    Attributes:
        original: prompt with the concept.
        target: prompt without it (or with the updated fact).
        expect: on the embedded world, attribute values an exact reader checks in the image:
            the concept's values (removal: do they survive?) or the new fact's (update: do they
            appear?), e.g. ``{"style": "striped"}``.
    """

    original: str
    target: str
    expect: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.original.strip():
            raise ValueError(f"prompt pair {self.original!r} -> {self.target!r}: empty original.")
        if self.original.strip() == self.target.strip():
            raise ValueError(
                f"prompt pair original == target ({self.original!r}): the target must drop or "
                "change the concept, or every window scores the same."
            )


def load_pairs(path: str | Path) -> list[PromptPair]:
    """Prompt pairs from a YAML prompt set (``pairs: [{original, target, expect?}, ...]``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Prompt set {path} does not exist; see datasets/ for the sets.")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not raw.get("pairs"):
        raise ValueError(f"{path} has no `pairs:` list of {{original, target}} entries.")
    return [PromptPair(**p) for p in raw["pairs"]]
