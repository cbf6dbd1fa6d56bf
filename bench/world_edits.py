"""LocoGen then LocoEdit for every LocoWorld concept, in one table (the numbers in the notes).

For each concept it runs the shipped configs (``configs/localize/world_<c>.yaml`` then
``configs/edit/world_<c>.yaml``) into ``<out>/<c>/``, and prints the exact-reader triad of the
edit on the LocoGen window, on all sites and on a random window beside the unedited model and the
reference row (the unedited model given the target prompt at every site).
    python bench/world_edits.py --threads 2
    python bench/world_edits.py --source world-sd1-planted --out lightning_logs/world_edits_planted
    python bench/world_edits.py --key-tokens last_subject --out lightning_logs/world_edits_last
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import yaml

from loco_lightning.cli import main as loco

CONCEPTS = ("style", "shape", "colour", "artist", "trademark", "fact")
GROUPS = ("efficacy", "generality", "specificity")


def run(concept: str, out: Path, source, score: str, key_tokens, extra: list[str]) -> dict:
    common = ["--trainer.logger", "false", *extra]
    if source:
        common += ["--model.diffusion.source", source]
    located = out / concept / "localize"
    loco(
        ["localize", "--config", f"configs/localize/world_{concept}.yaml"]
        + ["--model.score", score, "--model.output_dir", str(located), *common]
    )
    edited = out / concept / "edit"
    config = f"configs/edit/world_{concept}.yaml"
    keys = []
    if key_tokens:  # every editor of the config with these key tokens
        editors = yaml.safe_load(Path(config).read_text())["model"]["editors"]
        for editor in editors.values():
            editor["init_args"]["key_tokens"] = key_tokens
        keys = ["--model.editors", json.dumps(editors)]
    loco(
        ["edit", "--config", config, *keys]
        + ["--model.locogen", str(located), "--model.output_dir", str(edited), *common]
    )
    selection = json.loads((located / "selection.json").read_text())
    rows = json.loads((edited / "results.json").read_text())
    return {"window": selection["window"], "rows": rows}


def table(results: dict[str, dict]) -> str:
    lines = [
        "| concept | LocoGen window | method | efficacy | generality | specificity | "
        "reference | FID on specificity | time to edit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for concept, res in results.items():
        read = {(r["method"], r["group"]): r for r in res["rows"]}
        reference = read[("unedited", "reference")]["reader"]
        methods = dict.fromkeys(r["method"] for r in res["rows"])
        for method in methods:
            cells = [f"{read[(method, g)]['reader']:.3f}" for g in GROUPS]
            seconds = read[(method, "efficacy")].get("seconds_to_edit")
            fid = read[(method, "specificity")].get("fid")
            lines.append(
                f"| {concept} | {res['window']} | {method} | {' | '.join(cells)} | "
                f"{reference:.3f} | {'–' if fid is None else f'{fid:.3f}'} | "
                f"{'–' if seconds is None else f'{seconds * 1e3:.0f} ms'} |"
            )
    return "\n".join(lines)


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=None, help="world model (default: world-sd1)")
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS), choices=CONCEPTS)
    parser.add_argument("--score", default="reader", choices=["clip", "reader"])
    parser.add_argument("--out", type=Path, default=Path("lightning_logs/world_edits"))
    parser.add_argument(
        "--key-tokens",
        default=None,
        choices=["last_subject", "last_subject_eos", "aligned"],
        help="the edit's key tokens (default: each config's)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more LightningCLI arguments for both jobs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        c: run(c, args.out, args.source, args.score, args.key_tokens, args.extra)
        for c in args.concepts
    }
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main_()
