"""Many concepts at once: every closed-form editor erases N of world-sd1's colours in one solve.

For N = 1, 5 and all 8 colours, each editor (as the world comparison configures it, on every
site: a LocoGen window is found per concept, so many concepts have no one window) is solved once
for all N requests, timed (best of ``--repeats``); then, with the edit applied, the exact readers
read each erased colour's efficacy prompts (survival: the share of images still showing it;
its floor is the share the unedited model shows for the same prompts without the colour word,
what an edit to "no colour" can reach) and prompts that name only colours left alone
(specificity: the share read as asked, against the unedited model's). Prints the table and
writes ``edit_scale.png`` (time and survival against N).
    python bench/edit_scale.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from loco_lightning.data.world.prompt_sets import prompt_sets
from loco_lightning.data.world.vocab import default_vocabulary
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.published import MACE, RECE, SPEED, TIME, UCE
from loco_lightning.editing.quickfix import QuickFix
from loco_lightning.editing.requests import edit_requests
from loco_lightning.metrics.readers import world_match
from loco_lightning.models.diffusion import Diffusion

EDITORS = {  # as configs/compare/world_style.yaml sets them, LocoEdit on every site
    "locoedit_all": LocoEdit(sites="all", key_tokens="aligned", lambda_k=0.5, lambda_v=0.5),
    "uce": UCE(),
    "time": TIME(augmentations=("A picture of ", "An image of ")),
    "rece": RECE(),
    "speed": SPEED(),
    "mace_cfr": MACE(),
    "quickfix": QuickFix(lam=0.5, key_tokens="aligned"),
}


def read(model, match, entries: list[dict], seeds: list[int]) -> float:
    """Share of images the exact readers find as each entry's ``expect`` says."""
    prompts = [e["prompt"] for e in entries for _ in seeds]
    images = Diffusion().denoise(model, model.encode(prompts), seeds * len(entries))
    return float(match.scores(images, [e["expect"] for e in entries for _ in seeds]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=6, help="efficacy prompts per colour")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="edit_scale.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = Diffusion(source="world-sd1").load()
    match = world_match(model.world)
    colours = list(default_vocabulary().colours)
    sets = {c: prompt_sets(f"colour_{c}", n=args.prompts) for c in colours}
    seeds = [0]
    rows = []
    for n in (1, 5, len(colours)):
        erased, kept = colours[:n], colours[n:] or colours[:1]
        requests = [r for c in erased for r in edit_requests(_request_file(sets[c][1]))]
        efficacy = {c: sets[c][2]["efficacy"] for c in erased}
        neutral = [e for c in kept for e in sets[c][2]["efficacy"][:2]] if n < len(colours) else []
        before = read(model, match, neutral, seeds) if neutral else None
        floor = sum(read(model, match, sets[c][2]["reference"], seeds) for c in erased) / n
        for name, editor in EDITORS.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                edit = editor.compute(model, requests)
                times.append(time.perf_counter() - start)
            with edit.applied(model):
                survival = [read(model, match, efficacy[c], seeds) for c in erased]
                spec = read(model, match, neutral, seeds) if neutral else None
            rows.append(
                (name, n, min(times), sum(survival) / n, max(survival), floor, before, spec)
            )
    print("editor        N   seconds  survival mean  worst  floor   specificity unedited -> edited")
    for name, n, sec, mean, worst, floor, before, spec in rows:
        kept = f"{before:.2f} -> {spec:.2f}" if spec is not None else "(no colour left)"
        print(f"{name:12s} {n:2d}  {sec:7.3f}  {mean:13.2f}  {worst:5.2f}  {floor:5.2f}   {kept}")
    slowest = max(sec for _, n, sec, *_ in rows if n == len(colours))
    print(f"slowest editor on all {len(colours)} colours: {slowest:.3f} s ({args.threads} threads)")
    plot(rows, Path(args.out))


def _request_file(edit: dict) -> list[dict]:
    return [{**edit["request"], "preserve": edit["preserve"]}]


def plot(rows, path: Path) -> None:
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_time, ax_survival = fig.subplots(1, 2)
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        ns = [r[1] for r in mine]
        ax_time.plot(ns, [r[2] for r in mine], marker="o", label=name)
        ax_survival.plot(ns, [r[3] for r in mine], marker="o", label=name)
    ax_time.set(xlabel="colours erased at once (N)", ylabel="seconds to edit", yscale="log")
    ax_survival.set(xlabel="colours erased at once (N)", ylabel="survival of the erased colours")
    ax_survival.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
