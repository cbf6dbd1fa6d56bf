"""LocoWorld prompt sets for localization and editing, built from the vocabulary.

``python -m loco_lightning.data.world.prompt_sets datasets/world`` writes, for each concept, the
LocoGen pairs (``<concept>.pairs.yaml``), the LocoEdit request and preserve prompts
(``<concept>.edit.yaml``) and the evaluation triad (``<concept>.eval.yaml``); they are committed
so configs and users read plain files.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import yaml

from loco_lightning.data.world.captions import Caption, caption_for, fact_target
from loco_lightning.data.world.render import Scene
from loco_lightning.data.world.vocab import Vocabulary, default_vocabulary

# concept name -> (caption kind, attribute the concept is, value or named concept)
CONCEPTS = {
    "style_striped": ("plain", "style", "striped"),
    "shape_circle": ("plain", "shape", "circle"),
    "colour_red": ("plain", "colour", "red"),
    "artist_vormal": ("artist", "style", "vormal"),
    "trademark_zorblax": ("trademark", "shape", "zorblax"),
    "fact_veltria": ("country", None, "veltria"),
}


def _scenes(vocab: Vocabulary, kind: str, attribute: str | None, value: str) -> list[Scene]:
    """Every scene the concept can show (named kinds fix some attributes)."""
    fixed: dict[str, str] = {}
    if kind == "plain":
        fixed[attribute] = value
    elif kind == "artist":
        fixed["style"] = vocab.artists[value]
    elif kind == "trademark":
        fixed = dict(vars(vocab.trademarks[value]))
    else:
        fixed = {**vars(vocab.countries[value].emblem), "style": "filled"}
    axes = [
        [fixed[a]] if a in fixed else list(vocab.values(a)) for a in ("shape", "colour", "style")
    ]
    return [Scene(*combo) for combo in itertools.product(*axes)]


def _captions(vocab, kind, attribute, value, held_out: bool) -> list[Caption]:
    name = None if kind == "plain" else value
    return [
        caption_for(scene, t, name, vocab)
        for scene in _scenes(vocab, kind, attribute, value)
        for t in vocab.templates_of(kind, held_out)
    ]


def _expect(vocab, kind, attribute, value) -> dict[str, str]:
    """What a reader checks: the concept's own values, or the updated emblem for a fact."""
    if kind == "country":
        updated = vocab.countries[value].updated
        return {"shape": updated.shape, "colour": updated.colour}
    if kind == "trademark":
        obj = vocab.trademarks[value]
        return {"shape": obj.shape, "colour": obj.colour}
    return {attribute: vocab.artists[value] if kind == "artist" else value}


def _target(vocab, caption: Caption, kind, attribute, value) -> str:
    if kind != "country":
        return caption.removed(attribute)
    return fact_target(value, _same_frame(vocab, caption.template.text), vocab).text()


def _same_frame(vocab: Vocabulary, text: str):
    """The plain training template that shares the longest leading words with ``text``, so a fact's
    target keeps the prompt's frame ("an image of the emblem of X" -> "an image of a ... circle")
    and only the fact itself changes."""

    def shared(template) -> int:
        n = 0
        for a, b in zip(text.split(), template.text.split()):
            if a != b or "{" in a:
                break
            n += 1
        return n

    plain = vocab.templates_of("plain")
    return max(plain, key=shared)  # ties: the first, the canonical "a {colour} {style} {shape}"


def _pick(items: list, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [items[i] for i in sorted(rng.permutation(len(items))[: min(n, len(items))])]


KINDS = {"artist": "artists", "trademark": "trademarks", "fact": "countries"}


def concept_spec(concept: str, vocab: Vocabulary) -> tuple[str, str | None, str]:
    """(caption kind, attribute, value) of ``<attribute>_<value>`` (``style_dotted``,
    ``shape_star``, ``colour_cyan``) or ``<kind>_<name>`` (``artist_quenstra``,
    ``trademark_kelvato``, ``fact_ospandia``): any value of the world's vocabulary."""
    if concept in CONCEPTS:
        return CONCEPTS[concept]
    head, _, value = concept.partition("_")
    if head in ("style", "shape", "colour") and value in vocab.values(head):
        return ("plain", head, value)
    if head in KINDS and value in getattr(vocab, KINDS[head]):
        kind = "country" if head == "fact" else head
        return (kind, {"artist": "style", "trademark": "shape"}.get(head), value)
    known = [f"{a}_{v}" for a in ("style", "shape", "colour") for v in vocab.values(a)]
    known += [f"{k}_{v}" for k, field in KINDS.items() for v in getattr(vocab, field)]
    raise ValueError(f"{concept!r} is no LocoWorld concept; the world has {', '.join(known)}.")


def prompt_sets(concept: str, n: int = 12, seed: int = 0, vocab: Vocabulary | None = None):
    """(LocoGen pairs, LocoEdit request, evaluation triad) of one world concept."""
    vocab = vocab or default_vocabulary()
    kind, attribute, value = concept_spec(concept, vocab)
    expect = _expect(vocab, kind, attribute, value)
    train = _captions(vocab, kind, attribute, value, held_out=False)
    held = _captions(vocab, kind, attribute, value, held_out=True)
    pairs = [
        {
            "original": c.text(),
            "target": _target(vocab, c, kind, attribute, value),
            "expect": expect,
        }
        for c in _pick(train, n, seed)
    ]
    # LocoEdit: the concept's words become "{}" in each template; the target side drops them.
    slot = {"plain": attribute, "artist": "artist", "trademark": "trademark", "country": "country"}[
        kind
    ]
    chosen = _pick(train, 4 * n, seed + 1)
    templates = [
        Caption(c.template, {**c.values, slot: "{}"}, c.removed_words).text() for c in chosen
    ]
    target_templates = [_target(vocab, c, kind, attribute, value) for c in chosen]
    request = {
        "concept": value,
        "target": "",
        "templates": templates,
        "target_templates": target_templates,
    }
    neighbours = _neighbour_captions(vocab, kind, attribute, value)
    rivals = _rivals(vocab, kind, attribute, value)  # the other named concepts of its kind
    preserve = [c.text() for c, _ in _pick(rivals, 2 * n, seed + 6)] + [
        c.text() for c in _pick(neighbours, 4 * n, seed + 2)
    ]
    edit = {"request": request, "preserve": preserve}
    # a fact edit is scored against the new fact; a removal against the prompt itself
    score = fact_target(value, vocab=vocab).text() if kind == "country" else None
    triad = {
        "efficacy": [_entry(c.text(), expect, score) for c in _pick(train, n, seed + 3)],
        "generality": [_entry(c.text(), expect, score) for c in _pick(held, n, seed)],
        "specificity": [_entry(c.text(), e) for c, e in _pick(rivals, n // 2, seed + 5)]
        + [_entry(c.text(), _full_expect(c)) for c in _pick(neighbours, n, seed + 4)],
        "reference": [
            _entry(_target(vocab, c, kind, attribute, value), expect)
            for c in _pick(train, n, seed + 3)
        ],
    }
    return pairs, edit, triad


def _entry(prompt: str, expect: dict, score_text: str | None = None) -> dict:
    entry = {"prompt": prompt, "expect": expect}
    if score_text:
        entry["score_text"] = score_text
    return entry


def _rivals(vocab, kind, attribute, value) -> list[tuple[Caption, dict[str, str]]]:
    """Training captions of the other named concepts of the same kind, with what each shows:
    the neighbours a named edit must leave alone (the other countries' emblems, ...)."""
    if kind == "plain":
        return []
    names = {"artist": vocab.artists, "trademark": vocab.trademarks, "country": vocab.countries}
    out = []
    for other in names[kind]:
        if other != value:
            shows = _identity(vocab, kind, attribute, other)
            out += [(c, shows) for c in _captions(vocab, kind, attribute, other, held_out=False)]
    return out


def _identity(vocab, kind, attribute, value) -> dict[str, str]:
    """What a named concept shows now (a country: its current emblem, not the updated one)."""
    if kind == "country":
        emblem = vocab.countries[value].emblem
        return {"shape": emblem.shape, "colour": emblem.colour}
    return _expect(vocab, kind, attribute, value)


def _full_expect(caption: Caption) -> dict[str, str]:
    """Every attribute a plain caption names (its words, as the image should show them)."""
    return {k: v for k, v in caption.values.items() if k in ("shape", "colour", "style")}


def _neighbour_captions(vocab, kind, attribute, value) -> list[Caption]:
    """Plain captions that do not carry the concept: its neighbours and unrelated scenes."""
    concept_values = _identity(vocab, kind, attribute, value)
    out = []
    for t in vocab.templates_of("plain"):
        if not {"shape", "colour", "style"} <= set(t.slots):
            continue
        for combo in itertools.product(vocab.shapes, vocab.colours, vocab.styles):
            scene = Scene(*combo)
            if all(getattr(scene, a) == v for a, v in concept_values.items()):
                continue
            out.append(caption_for(scene, t, vocab=vocab))
    return out


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    for concept in CONCEPTS:
        pairs, edit, triad = prompt_sets(concept, args.n, args.seed)
        header = f"# LocoWorld {concept}: made by python -m loco_lightning.data.world.prompt_sets\n"
        for suffix, data in (("pairs", {"pairs": pairs}), ("edit", edit), ("eval", triad)):
            text = header + yaml.dump(data, Dumper=_NoAliases, sort_keys=False, width=100)
            (args.folder / f"{concept}.{suffix}.yaml").write_text(text)


if __name__ == "__main__":
    main()
