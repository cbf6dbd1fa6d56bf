"""Fixed evaluation prompts ("probes") for LocoWorld models: what a model is asked, and the answer.

Loss is not a readiness signal for the world model (WORLD.md); accuracy on a fixed set of prompts
and seeds, read back with the exact readers, is. The same probe set scores the text-to-image model
(generate, then read) and WorldCLIP (rank the true caption against captions one attribute off).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from loco_lightning.data.world.captions import caption_for
from loco_lightning.data.world.dataset import NAMED_KINDS
from loco_lightning.data.world.render import Scene, render, sample_scene
from loco_lightning.data.world.vocab import ATTRIBUTES, Template, Vocabulary, default_vocabulary

# The attributes a named concept fixes: its accuracy counts only when all of them are right.
CONCEPT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "artist": ("style",),
    "trademark": ATTRIBUTES,
    "country": ATTRIBUTES,
}


def one_attribute_off(
    scene: Scene, template: Template, name: str | None, vocab: Vocabulary
) -> list[tuple[str, str]]:
    """Captions of `template` that differ from the true one in exactly one slot.

    Plain slots take every other value of their attribute; a named slot takes every other concept
    of its kind (which changes the attributes that concept fixes).

    Returns:
        (what changed, caption) pairs: an attribute name, or the kind of the named concept.
    """
    out = []
    for slot in template.slots:
        if slot in ATTRIBUTES:
            for value in vocab.values(slot):
                if value != getattr(scene, slot):
                    other = Scene(**{**vars(scene), slot: value})
                    out.append((slot, caption_for(other, template, name, vocab).text()))
            continue
        table = {"artist": vocab.artists, "trademark": vocab.trademarks, "country": vocab.countries}
        for other_name in sorted(table[slot]):
            if other_name == name:
                continue
            if slot == "artist":
                other = Scene(scene.shape, scene.colour, vocab.artists[other_name])
            elif slot == "trademark":
                other = Scene(**vars(vocab.trademarks[other_name]))
            else:
                emblem = vocab.countries[other_name].emblem
                other = Scene(emblem.shape, emblem.colour, "filled")
            out.append((slot, caption_for(other, template, other_name, vocab).text()))
    return out


def probe_set(
    vocab: Vocabulary | None = None,
    per_concept: int = 16,
    seed: int = 0,
    held_out: bool = False,
    size: int = 16,
) -> list[dict]:
    """Every (shape, colour, style) combination once, then `per_concept` prompts per named concept.

    Plain prompts cycle through the templates; artist prompts draw shape and colour at random;
    renders have the training pose jitter. Everything is a pure function of the arguments.

    Items are dicts: `caption`; `seed` (starting noise of the generation); `kind`; `concept`;
    target indices `shape`, `colour`, `style`; `checks` (attributes scored: all three for plain
    prompts, `CONCEPT_ATTRIBUTES` for named ones); `image` (3, size, size) in [-1, 1], a render of
    the caption; `alternatives` and `alternative_of` (see `one_attribute_off`).

    Args:
        vocab: the vocabulary (packaged one by default).
        per_concept: prompts per named concept.
        seed: offsets the generation seeds and the draws, so a second, independent set exists.
        held_out: use the held-out paraphrase templates (generality) instead of training ones.
        size: render size of `image`.
    """
    vocab = vocab or default_vocabulary()
    plain = vocab.templates_of("plain", held_out)
    cases = [
        # the template index also steps once per style cycle, so styles meet every template
        (
            dict(zip(ATTRIBUTES, values)),
            plain[(i + i // len(vocab.styles)) % len(plain)],
            None,
            "plain",
        )
        for i, values in enumerate(itertools.product(vocab.shapes, vocab.colours, vocab.styles))
    ]
    tables = {"artist": vocab.artists, "trademark": vocab.trademarks, "country": vocab.countries}
    for kind in NAMED_KINDS:
        templates = vocab.templates_of(kind, held_out)
        for j, name in enumerate(n for n in sorted(tables[kind]) for _ in range(per_concept)):
            cases.append((_fixed(kind, name, vocab), templates[j % len(templates)], name, kind))
    items = []
    for i, (fixed, template, name, kind) in enumerate(cases):
        scene = sample_scene(np.random.default_rng([seed, 11, i]), vocab, 1.0, **fixed)
        image = render(scene, size, vocab)
        alternatives = one_attribute_off(scene, template, name, vocab)
        items.append(
            {
                "caption": caption_for(scene, template, name, vocab).text(),
                "seed": 100_000 * seed + i,
                "kind": kind,
                "concept": name or "",
                **{a: vocab.index(a, getattr(scene, a)) for a in ATTRIBUTES},
                "checks": ATTRIBUTES if kind == "plain" else CONCEPT_ATTRIBUTES[kind],
                "image": torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0,
                "alternatives": [text for _, text in alternatives],
                "alternative_of": [what for what, _ in alternatives],
            }
        )
    return items


def _fixed(kind: str, name: str, vocab: Vocabulary) -> dict[str, str]:
    """The attribute values a named concept determines."""
    if kind == "artist":
        return {"style": vocab.artists[name]}
    if kind == "trademark":
        return vars(vocab.trademarks[name])
    return {**vars(vocab.countries[name].emblem), "style": "filled"}


def probe_scores(read: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
    """Per-probe 0/1 scores of generated images, by key, over the probes each key applies to.

    Keys: ``shape``, ``colour``, ``style`` and ``all`` (all three) over plain probes; ``artist``,
    ``trademark``, ``country`` over their probes (every attribute the concept fixes right).

    Args:
        read: what `AttributeReader.read` returned for the images: attribute -> (B,) indices.
        batch: collated probes (`collate_probes`) the images were generated from, in order.
    """
    device = read["shape"].device
    correct = {a: (read[a] == batch[a].to(device)).float() for a in ATTRIBUTES}  # (B,) each
    kinds = list(batch["kind"])
    plain = torch.tensor([k == "plain" for k in kinds], device=device)
    scores = {a: correct[a][plain] for a in ATTRIBUTES}
    scores["all"] = (correct["shape"] * correct["colour"] * correct["style"])[plain]
    for kind, fixed in CONCEPT_ATTRIBUTES.items():
        mask = torch.tensor([k == kind for k in kinds], device=device)
        scores[kind] = torch.stack([correct[a] for a in fixed]).prod(0)[mask]
    return scores


def collate_probes(items: Sequence[dict]) -> dict:
    """Batch probes: tensors stacked, ints as a long tensor, everything else kept as lists."""
    batch = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], int):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch
