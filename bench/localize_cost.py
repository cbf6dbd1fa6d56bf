"""LocoGen at a fraction of the cost, checked against the exhaustive sweep on every world.

For every planted world (colour and style) and every concept of the world comparison, the
exhaustive sweep with the model's own sampler is the answer. Each cheaper setting runs through
the CLI on the same prompts and seeds: an early decision (score the clean image the sampler
predicts part way), a fewer-step sampler, and racing over windows on top of each
(replayed from that setting's exhaustive rows with the race's own planner: an item's row does
not depend on what it is batched with, and a test runs the race for real). Prints sample-steps,
the reduction, and whether the selected window and each size's best window are the exhaustive
sweep's (a size none of whose windows did anything leaves a race whole, and counts as not the
same), from one run. Folders under --out are kept: a rerun resumes and only prints.
    python bench/localize_cost.py --threads 2 --out bench_runs/cost
    python bench/localize_cost.py --worlds world-sd1-planted --seeds '[2, 3]'  # one retrained world
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from loco_lightning.cli import main as loco
from loco_lightning.data.prompts import PromptPair
from loco_lightning.localization.data import sweep_items
from loco_lightning.localization.results import aggregate, select
from loco_lightning.localization.search import Racing

PLANTED = ("sd1", "sd2", "sdxl", "if", "pixart")
CONCEPTS = ("artist", "colour", "fact", "shape", "style", "trademark")
SAMPLERS = {  # name -> CLI options
    "own": [],
    "early": ["--model.decide_at", "0.5"],
    "early40": ["--model.decide_at", "0.4"],
    "dpm10": [
        "--model.diffusion.scheduler",
        "DPMSolverMultistepScheduler",
        "--model.diffusion.steps",
        "10",
    ],
}
SEARCHES = {"exhaustive": None, "racing": Racing()}


def cases() -> list[tuple[str, str]]:
    """(world, concept config) pairs: planted worlds first, then the comparison's concepts."""
    planted = [(f"world-{w}-planted", c) for w in PLANTED for c in ("colour", "style")]
    return planted + [("world-sd1", c) for c in CONCEPTS]


def sweep(out: Path, world: str, concept: str, sampler: str, seeds: str | None) -> Path:
    folder = out / f"{world}-{concept}" / sampler
    if not (folder / "selection.json").exists():
        loco(
            [
                "localize",
                "--config",
                f"configs/localize/world_{concept}.yaml",
                "--model.diffusion.source",
                world,
                *SAMPLERS[sampler],
                *(["--data.seeds", seeds] if seeds else []),
                "--model.output_dir",
                str(folder),
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
    return folder


def replay(folder: Path, search: Racing | None) -> tuple[tuple, dict, int]:
    """The selection a search makes from a finished exhaustive folder, and its sample-steps."""
    sel = json.loads((folder / "selection.json").read_text())
    config = json.loads((folder / "sweep.json").read_text())
    rows = {}
    for path in folder.glob("items.rank*.jsonl"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows[row["key"]] = row
    n_sites = max(r["m"] for r in rows.values())
    pairs = [PromptPair(o, t, e) for o, t, e in config["pairs"]]
    items = sweep_items(pairs, n_sites, config["window_sizes"], config["seeds"], config["noise"])
    have = list(rows.values())
    if search is not None:
        have = []
        while todo := search.plan(items, have, sel["score"], sel["objective"]):
            have += [rows[it.key] for it in todo]
    chosen = select(
        aggregate(have, (sel["score"],)), n_sites, sel["objective"], sel["score"], sel["margin"]
    )
    best = {m: s for m, (s, _) in chosen.best.items()}
    return chosen.window, best, sum(r["steps"] for r in have)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_runs/cost")
    parser.add_argument("--seeds", default=None, help="instead of the configs' [0, 1], e.g. [2, 3]")
    parser.add_argument(
        "--samplers", default=",".join(SAMPLERS), help="which of " + ",".join(SAMPLERS)
    )
    parser.add_argument(
        "--worlds", default=None, help="only these worlds, e.g. world-sd1-planted,world-sd1"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    lines, worst = [], {}
    worlds = args.worlds.split(",") if args.worlds else None
    known = sorted({w for w, _ in cases()})
    if unknown := set(worlds or ()) - set(known):
        parser.error(f"--worlds {sorted(unknown)}: not benchmarked; choose from {known}")
    for world, concept in cases():
        if worlds is not None and world not in worlds:
            continue
        answer = replay(sweep(out, world, concept, "own", args.seeds), None)
        base = answer[2]
        for sampler in args.samplers.split(","):
            folder = sweep(out, world, concept, sampler, args.seeds)
            for name, search in SEARCHES.items():
                window, best, steps = replay(folder, search)
                same = window == answer[0]
                agree = sum(best.get(m) == s for m, s in answer[1].items())
                lines.append(
                    f"{world:22s} {concept:9s} {sampler:6s} {name:10s} {steps:6d} "
                    f"{base / steps:5.1f}x  window {list(window)!s:10s} "
                    f"{'same' if same else 'DIFFERS from ' + str(list(answer[0]))}  "
                    f"best per size {agree}/{len(answer[1])}"
                )
                key = (sampler, name)
                ratio, ok = worst.get(key, (float("inf"), True))
                worst[key] = (min(ratio, base / steps), ok and same)
    print("world                  concept   sampler search     steps  saving")
    print("\n".join(lines))
    print("\nper setting: smallest saving over all worlds and concepts; same window on every one")
    for (sampler, name), (ratio, ok) in worst.items():
        print(f"  {sampler:6s} {name:10s} >= {ratio:4.1f}x  {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
