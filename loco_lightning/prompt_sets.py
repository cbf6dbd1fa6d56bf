"""``loco prompts``: the three prompt-set files a concept needs, without writing YAML by hand.

For a LocoWorld concept (``style_dotted``, ``shape_star``, ``colour_cyan``, ``artist_quenstra``,
``trademark_kelvato``, ``fact_ospandia``: any value of the world's vocabulary) they come from
the world's own captions; for a real concept (``--kind style|object --name "Claude Monet"``) from
templates of its kind. Each file is read back through the same loaders the jobs use before the
command reports success, so a written set is a set the jobs accept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from loco_lightning.data.prompts import load_pairs
from loco_lightning.data.world.prompt_sets import prompt_sets
from loco_lightning.editing.data import load_eval_prompts
from loco_lightning.editing.requests import edit_requests
from loco_lightning.files import write_text

# real concepts: (with the concept, the same without it) templates; {c} the concept, {s} a
# subject or setting, {a} the anchor that replaces the concept; then held-out paraphrases
TEMPLATES = {
    "style": (
        [
            ("{s} in the style of {c}", "{s}"),
            ("a painting of {s} in the style of {c}", "a painting of {s}"),
            ("a picture of {s} in the style of {c}", "a picture of {s}"),
            ("an artwork of {s} by {c}", "an artwork of {s}"),
        ],
        ["{c}'s painting of {s}", "{s}, painted by {c}", "{s} as {c} would paint it"],
    ),
    "object": (
        [
            ("a photo of {c} {s}", "a photo of {a} {s}"),
            ("a picture of {c} {s}", "a picture of {a} {s}"),
            ("{c} {s}", "{a} {s}"),
            ("an image of {c} {s}", "an image of {a} {s}"),
        ],
        ["a close-up photo of {c} {s}", "{c}, photographed {s}"],
    ),
}
SUBJECTS = {  # what a style paints, where an object stands
    "style": ["a house", "a garden", "a city street", "a portrait of a woman", "a river", "a boat"],
    "object": ["on a table", "in a park", "on the street", "in a room", "at the beach", ""],
}
NEIGHBOURS = {  # the specificity group: concepts of the same kind that must not move
    "style": ["Claude Monet", "Pablo Picasso", "Rembrandt", "Salvador Dali", "Vincent van Gogh"],
    "object": ["a dog", "a car", "a chair", "a bicycle", "an apple"],
}
ANCHOR = {"style": "", "object": "an object"}  # what the target side says instead


def _say(template: str, **slots: str) -> str:
    return " ".join(template.format(**slots).split())


def real_sets(name: str, kind: str, anchor: str | None = None) -> tuple[list, dict, dict]:
    """(LocoGen pairs, LocoEdit request with preserve prompts, evaluation triad) of a real
    concept ``name`` of ``kind`` (``style``: an artist or art style; ``object``)."""
    if kind not in TEMPLATES:
        raise ValueError(f"--kind={kind!r}: choose one of {sorted(TEMPLATES)}.")
    if not name.strip():
        raise ValueError("--name is empty: give the concept's words, e.g. 'Claude Monet'.")
    a = ANCHOR[kind] if anchor is None else anchor
    forms, paraphrases = TEMPLATES[kind]
    subjects = SUBJECTS[kind]
    pairs = [
        {"original": _say(w, c=name, s=s, a=a), "target": _say(wo, c=name, s=s, a=a)}
        for s in subjects
        for w, wo in forms
    ][:12]
    others = [n for n in NEIGHBOURS[kind] if n.lower() != name.lower()]
    neighbours = [_say(w, c=n, s=s, a=a) for n in others for s in subjects for w, _ in forms[:1]]
    request = {
        "concept": name,
        "target": a,
        "templates": [_say(w, c="{}", s=s, a=a) for s in subjects[:3] for w, _ in forms],
        "target_templates": [_say(wo, c=a, s=s, a=a) for s in subjects[:3] for _, wo in forms],
    }
    triad = {
        "efficacy": [p["original"] for p in pairs],
        "generality": [_say(p, c=name, s=s) for s in subjects[:4] for p in paraphrases],
        "specificity": neighbours[::2][:12],
        "reference": [p["target"] for p in pairs],
    }
    return pairs, {"request": request, "preserve": neighbours[1::2][:12]}, triad


def write_sets(
    folder: str | Path, name: str, pairs: list, edit: dict, triad: dict, header: str
) -> list[Path]:
    """``<name>.pairs.yaml``, ``.edit.yaml`` and ``.eval.yaml`` in ``folder``, each written
    atomically and then read back by the loaders the jobs use (a set they would refuse is
    reported here, not minutes into a run)."""
    folder = Path(folder)
    written = []
    for suffix, data in (("pairs", {"pairs": pairs}), ("edit", edit), ("eval", triad)):
        text = f"# {header}\n" + yaml.safe_dump(
            data, sort_keys=False, width=100, allow_unicode=True
        )
        written.append(write_text(folder / f"{name}.{suffix}.yaml", text))
    load_pairs(written[0])
    edit_requests(str(written[1]))
    load_eval_prompts(written[2])
    return written


def main(argv: list[str]) -> None:
    """``loco prompts``: write a concept's prompt sets (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="loco prompts",
        description="Write the pairs, edit and evaluation prompt sets of a concept.",
    )
    parser.add_argument(
        "concept",
        help="a LocoWorld concept (style_dotted, artist_quenstra, "
        "fact_ospandia, ...) or, with --kind, a file stem for a real concept",
    )
    parser.add_argument("--kind", choices=sorted(TEMPLATES), help="a real concept's kind")
    parser.add_argument("--name", help="a real concept's words, e.g. 'Claude Monet'")
    parser.add_argument("--anchor", help="what replaces a real concept (default by kind)")
    parser.add_argument("--out", default="datasets/mine", help="folder (default datasets/mine)")
    parser.add_argument("--n", type=int, default=12, help="prompts per group (world concepts)")
    parser.add_argument("--seed", type=int, default=0, help="which captions (world concepts)")
    args = parser.parse_args(argv)
    if args.kind:
        sets = real_sets(args.name or args.concept.replace("_", " "), args.kind, args.anchor)
        header = f"{args.kind} {args.name or args.concept}: made by loco prompts"
    else:
        sets = prompt_sets(args.concept, args.n, args.seed)
        header = f"LocoWorld {args.concept}: made by loco prompts"
    for path in write_sets(args.out, args.concept, *sets, header):
        print(path)
