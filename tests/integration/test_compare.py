"""`loco compare` end to end on the SD-1 miniature: trained baselines loaded from their deltas,
closed forms solved inline, one table with every method and group, the two figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from loco_lightning.cli import main
from loco_lightning.editing.locoedit import read_delta
from tests.helpers import tiny_clip_folder
from tests.unit.baselines.test_finetune import fit

METHODS = ("unedited", "locoedit/given", "locoedit/all", "quickfix", "esd", "ablate")
GROUPS = ("efficacy", "generality", "specificity", "reference")
EDIT = "datasets/world/style_striped.edit.yaml"


def test_compare_writes_one_row_per_method_and_group_with_the_triad_filled(tmp_path):
    for job in ("esd", "ablate"):
        fit(job, tmp_path / job, 2)
    out = tmp_path / "compare"
    main(
        [
            "compare",
            "--config",
            "configs/compare/world_style.yaml",
            "--model.diffusion.family",
            "sd1",
            "--model.diffusion.source",
            "miniature",
            "--model.clip",
            tiny_clip_folder(),
            "--model.diffusion.steps",
            "2",
            "--model.site_choices",
            "[given, all]",
            "--model.sites",
            "[3, 4]",
            "--model.baselines",
            json.dumps({j: str(tmp_path / j / f"{j}.safetensors") for j in ("esd", "ablate")}),
            "--model.output_dir",
            str(out),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "tb"),
            "--data.seeds",
            "[0]",
        ]
    )
    table = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["group"]) for r in table] == [(m, g) for g in GROUPS for m in METHODS]
    for row in table:
        filled = ("clip",) + (() if row["method"] == "unedited" else ("fid", "seconds_to_edit"))
        assert all(isinstance(row.get(c), float) and math.isfinite(row[c]) for c in filled), row
        assert row.get("reader") is None  # a miniature carries no readers: only worlds do
    seconds = {r["method"]: r.get("seconds_to_edit") for r in table}
    for job in ("esd", "ablate"):  # the training time travels with the delta
        _, metadata, _ = read_delta(tmp_path / job / f"{job}.safetensors")
        assert metadata["seconds"] > 0 and seconds[job] == metadata["seconds"]
    # the preserve set given as a file reaches both closed forms as its prompts
    preserve = yaml.safe_load(Path(EDIT).read_text())["preserve"]
    for method in ("locoedit_all", "quickfix"):
        _, metadata, _ = read_delta(out / f"{method}.safetensors")
        assert metadata["params"]["preserve"] == preserve
    markdown = (out / "results.md").read_text()
    assert all(f"| {m} |" in markdown for m in METHODS) and (out / "results.csv").exists()
    assert (out / "efficacy_specificity.png").stat().st_size > 0
    assert (out / "time_to_edit.png").stat().st_size > 0
    assert list((tmp_path / "tb").glob("compare_world_style/version_*/events.out.tfevents.*"))
