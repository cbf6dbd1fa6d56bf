"""Edit requests and the token positions whose embeddings the closed form remaps."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import yaml

from loco_lightning.models.tokenizers import (
    ContextTokens,
    Segments,
    concept_positions,
    last_token,
    per_segment,
)

KeyTokens = Literal["last_subject", "last_subject_eos", "aligned"]


@dataclass(frozen=True)
class EditRequest:
    """Make prompts with ``concept`` act as if they said ``target``.

    Attributes:
        concept: the concept's words ("Van Gogh", "striped", "the emblem of veltria").
        target: what replaces it ("a painting", "", "an orange filled circle").
        templates: prompts the concept is put in (``{}`` is the concept); the reference uses
            "{}", "a painting in the style of {}", "a photo in the style of {}", "a picture in the
            style of {}" for styles.
        target_templates: templates for the target side, one per template; None (the
            reference) pairs every template with the bare ``target`` prompt.
        preserve: prompts whose keys/values the edit should keep (other concepts of the same
            kind); an ``*.edit.yaml`` carries them beside its request, so whoever loads the
            request keeps what belongs to it. Editors add their own ``preserve`` to these.
    """

    concept: str
    target: str
    templates: tuple[str, ...] = ("{}",)
    target_templates: tuple[str, ...] | None = None
    preserve: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        said = f"edit request concept={self.concept!r}, target={self.target!r}"
        if not self.concept.strip():
            raise ValueError(f"{said}: the concept is empty; name what to edit.")
        if " ".join(self.concept.split()) == " ".join(self.target.split()):
            raise ValueError(f"{said}: concept == target, so the edit would change nothing.")
        if not self.templates:
            raise ValueError(f"{said}: templates is empty; give at least one, e.g. ['{{}}'].")
        blind = [t for t in self.templates if t.count("{}") != 1]
        if blind:
            raise ValueError(
                f"{said}: templates {blind} must hold '{{}}' exactly once (where the concept goes)."
            )
        n = len(self.templates if self.target_templates is None else self.target_templates)
        if n != len(self.templates):
            raise ValueError(
                f"{said}: {len(self.templates)} templates but {n} target_templates; give one "
                "target template per template, or leave target_templates out (None)."
            )
        self.check_preserve(self.preserve)

    def mentions(self, prompt: str) -> bool:
        """Whether ``prompt`` says the concept (as whole words, any case)."""
        words = r"\s+".join(map(re.escape, self.concept.split()))
        return re.search(rf"(?<!\w){words}(?!\w)", prompt, re.IGNORECASE) is not None

    def check_preserve(self, prompts) -> None:
        """Refuses preserve prompts that say the concept: keeping them would fight the edit."""
        clash = [p for p in prompts if self.mentions(p)]
        if clash:
            raise ValueError(
                f"edit request concept={self.concept!r}: preserve prompts {clash[:3]} say the "
                "concept being edited, so keeping them would undo the edit; preserve other "
                "concepts (`loco prompts <concept>` writes a matching set)."
            )

    def pairs(self) -> list[tuple[str, str, str]]:
        """(prompt with the concept, same prompt without it, target prompt) per template."""
        targets = self.target_templates or ("{}",) * len(self.templates)
        return [
            (t.format(self.concept), " ".join(t.format("").split()), tt.format(self.target))
            for t, tt in zip(self.templates, targets)
        ]


def key_positions(
    tokens: Segments, triples: list[tuple[str, str, str]], mode: KeyTokens
) -> list[list[tuple[int, int]]]:
    """For each (source, source without the concept, target): the (position in ``source``,
    position in ``target``) pairs whose embeddings the edit maps (rows of the encoded contexts;
    in a context of several tokenizers' rows, SD3's, each segment's pairs, in segment order).

    - ``last_subject`` (the reference): the concept's last token -> the target's last token;
    - ``last_subject_eos``: that, plus every end-of-text/padding position, offset for offset;
    - ``aligned``: every position, matched to the target by sequence alignment (the concept's
      own tokens go to the target's tokens that replace them, or to the next matched one).
    """
    if mode not in get_args(KeyTokens):
        raise ValueError(f"key_tokens={mode!r}: choose one of {list(get_args(KeyTokens))}.")
    return [list(p) for p in per_segment(tokens, lambda t: _segment_positions(t, triples, mode))]


def _segment_positions(tokens: ContextTokens, triples, mode: KeyTokens):
    if mode in ("last_subject", "last_subject_eos"):
        return [_last_subject(tokens, *triple, mode == "last_subject_eos") for triple in triples]
    sources = tokens.ids([s for s, _, _ in triples], padded=True)  # one tokenizer call per side
    targets = tokens.ids([t for _, _, t in triples], padded=True)
    return [_aligned(src, tgt) for src, tgt in zip(sources, targets)]


def _last_subject(tokens: ContextTokens, source: str, without: str, target: str, eos: bool):
    pairs = [(concept_positions(tokens, source, without)[-1], last_token(tokens, target))]
    if eos:
        length = tokens.length
        eos_s, eos_t = last_token(tokens, source) + 1, last_token(tokens, target) + 1
        pairs += [(eos_s + k, min(eos_t + k, length - 1)) for k in range(length - eos_s)]
    return pairs


def _aligned(src: list[int], tgt: list[int]) -> list[tuple[int, int]]:
    matcher = difflib.SequenceMatcher(a=src, b=tgt, autojunk=False)
    pairs = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        for i in range(i1, i2):
            if op == "equal":
                pairs.append((i, j1 + i - i1))
            elif op != "insert":
                pairs.append((i, min(j1 + i - i1, j2 - 1) if j2 > j1 else min(j1, len(tgt) - 1)))
    return pairs


def _read(path: str) -> dict:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(
            f"{path} does not exist; give the requests inline or the path of an edit prompt set "
            "such as datasets/world/style_striped.edit.yaml."
        )
    return yaml.safe_load(file.read_text()) or {}


def edit_requests(requests: list[EditRequest | dict] | str) -> list[EditRequest]:
    """The requests themselves, or those of a YAML file's ``request``/``requests`` entry (its
    ``preserve`` entry goes with them)."""
    if isinstance(requests, str):
        raw = _read(requests)
        if "request" not in raw and "requests" not in raw:
            raise KeyError(f"{requests} has no 'request' or 'requests' entry.")
        kept = raw.get("preserve") or []
        requests = [
            {**r, "preserve": [*r.get("preserve", []), *kept]}
            for r in raw.get("requests") or [raw["request"]]
        ]
    out = []
    for r in requests:
        if isinstance(r, dict):  # YAML lists become tuples, as the dataclass declares
            r = EditRequest(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
        out.append(r)
    return out


def preserved(editor, requests: list[EditRequest]) -> tuple[str, ...]:
    """What an edit keeps: the editor's ``preserve`` prompts, then those the requests carry, once
    each. The editor's may not say a concept being edited (refused); a request's set was written
    for its own concept, so where several are edited at once, its prompts that say another of
    them are left out."""
    for request in requests:
        request.check_preserve(editor.preserve)
    carried = [p for r in requests for p in r.preserve if not any(o.mentions(p) for o in requests)]
    return tuple(dict.fromkeys([*editor.preserve, *carried]))


def preserve_prompts(preserve: list[str] | str) -> list[str]:
    """The prompts themselves, or a YAML file's ``preserve`` entry."""
    return list(_read(preserve).get("preserve", [])) if isinstance(preserve, str) else preserve
