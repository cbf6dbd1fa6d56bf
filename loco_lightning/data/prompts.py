"""Prompt pairs: an original prompt that carries a concept and a target prompt without it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptPair:
    """``original`` carries the concept; ``target`` has it removed (style, object) or updated."""

    original: str
    target: str
