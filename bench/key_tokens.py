"""The paper's DeepFloyd finding, examined on the worlds: last-subject keys against aligned keys.

Basu et al. explain why LocoEdit fails on DeepFloyd IF: its T5 attends both ways, so a concept
leaks into every token, and remapping the last subject token leaves concept-bearing keys
elsewhere; a causal CLIP keeps the concept at and after its tokens. This prints, for a causal world
(``world-sd1``) and the bidirectional one (``world-if-planted``):

1. where the concept sits in the text context: the share of the context change (concept prompt
   against its target, aligned position by position, ``‖Δ‖²``) at the last subject token, before
   it, and after it;
2. LocoEdit through the ordinary jobs (``bench/world_edits.py``'s runs) with ``last_subject``
   against ``aligned`` key tokens: the exact-reader survival of the concept on the LocoGen window.

Not a test: a report (the numbers go into the notes).
    python bench/key_tokens.py --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from world_edits import run

from loco_lightning.editing.requests import edit_requests, key_positions
from loco_lightning.models import load_model
from loco_lightning.models.tokenizers import concept_positions

SOURCES = ("world-sd1", "world-if-planted")
CONCEPTS = {"style": "style_striped", "artist": "artist_vormal"}
PARTS = ("before", "own", "last", "after")  # before the concept, its other tokens, its last, after


@torch.no_grad()
def leak(source: str, concept: str) -> dict[str, float]:
    """Share of ``‖context(concept prompt) − context(target)‖²`` (aligned positions) that lies
    before the concept, on its earlier tokens, on its last token, and after it."""
    model = load_model(source=source)
    tokens = model.segments  # the context's rows, as LocoEdit finds its keys
    requests = edit_requests(f"datasets/world/{CONCEPTS[concept]}.edit.yaml")
    triples = [t for r in requests for t in r.pairs()]
    context = model.encode([s for s, _, _ in triples] + [t for _, _, t in triples]).context.float()
    n = len(triples)
    parts = dict.fromkeys(PARTS, 0.0)
    for i, pairs in enumerate(key_positions(tokens, triples, "aligned")):
        own = concept_positions(tokens, triples[i][0], triples[i][1])
        for a, b in pairs:
            change = (context[i, a] - context[n + i, b]).square().sum().item()
            part = "before" if a < own[0] else "after" if a > own[-1] else "own"
            part = "last" if a == own[-1] else part
            parts[part] += change
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("lightning_logs/key_tokens"))
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS), choices=list(CONCEPTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [
        "| world | concept | Δ before | Δ on its other tokens | Δ at its last | Δ after | "
        "key tokens | window | "
        "unedited | LocoEdit | all sites | reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for source in SOURCES:
        for concept in args.concepts:
            share = leak(source, concept)
            for keys in ("last_subject", "aligned"):
                out = args.out / source / keys
                res = run(concept, out, source, "reader", keys, [])
                read = {(r["method"], r["group"]): r["reader"] for r in res["rows"]}
                lines.append(
                    f"| {source} | {concept} | "
                    + " | ".join(f"{share[k]:.2f}" for k in PARTS)
                    + f" | {keys} | "
                    f"{res['window']} | {read[('unedited', 'efficacy')]:.3f} | "
                    f"{read[('locoedit', 'efficacy')]:.3f} | "
                    f"{read[('locoedit_all', 'efficacy')]:.3f} | "
                    f"{read[('unedited', 'reference')]:.3f} |"
                )
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
