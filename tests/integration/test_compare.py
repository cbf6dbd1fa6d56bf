"""`loco compare` end to end on the SD-1 miniature: every registered editor by name, trained
baselines loaded from their deltas, one table with every method and group, the two figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from loco_lightning.cli import main
from loco_lightning.editing.edits import load_edit
from tests.helpers import tiny_clip_folder
from tests.unit.baselines.test_finetune import fit

METHODS = (
    "unedited", "locoedit", "locoedit_all", "uce", "time", "rece", "speed", "mace_cfr", "quickfix",
    "neurons", "esd", "ablate",
)  # fmt: skip
GROUPS = ("efficacy", "generality", "specificity", "reference")
EDIT = "datasets/world/style_striped.edit.yaml"


def editors(tmp_path) -> str:
    """Every editor on the miniature (whose 77 tokens of width 32 leave no room to keep the
    empty prompt: keep_empty false), the fine-tuned ones from their saved deltas."""
    free = {"keep_empty": False}
    closed = {"preserve": EDIT} | free
    rows = {
        "locoedit": ("LocoEdit", {"sites": [3, 4], "key_tokens": "aligned"} | closed),
        "locoedit_all": ("LocoEdit", {"sites": "all", "key_tokens": "aligned"} | closed),
        "uce": ("UCE", closed),
        "time": ("TIME", free),
        "rece": ("RECE", {"rounds": 1} | closed),
        "speed": ("SPEED", closed),
        "mace_cfr": ("MACE", closed),
        "quickfix": ("QuickFix", {"lam": 0.5} | closed),
        "neurons": ("Neurons", {"sites": [3, 4], "k": 4}),
    }
    rows |= {
        j: ("Saved", {"path": str(tmp_path / j / f"{j}.safetensors")}) for j in ("esd", "ablate")
    }
    return json.dumps({n: {"class_path": c, "init_args": a} for n, (c, a) in rows.items()})


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
            "--model.editors",
            editors(tmp_path),
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
        edited = ("fid", "seconds_to_edit", "empty_drift")
        filled = ("clip",) + (() if row["method"] == "unedited" else edited)
        assert all(isinstance(row.get(c), float) and math.isfinite(row[c]) for c in filled), row
        assert row.get("reader") is None  # a miniature carries no readers: only worlds do
    seconds = {r["method"]: r.get("seconds_to_edit") for r in table}
    for job in ("esd", "ablate"):  # the training time travels with the delta
        metadata = load_edit(tmp_path / job / f"{job}.safetensors").metadata
        assert metadata["seconds"] > 0 and seconds[job] == metadata["seconds"]
    # the preserve set given as a file reaches both closed forms as its prompts
    preserve = yaml.safe_load(Path(EDIT).read_text())["preserve"]
    for method in ("locoedit_all", "uce", "quickfix"):
        metadata = load_edit(out / f"{method}.safetensors").metadata
        assert metadata["params"]["preserve"] == preserve
    markdown = (out / "results.md").read_text()
    assert all(f"| {m} |" in markdown for m in METHODS) and (out / "results.csv").exists()
    assert (out / "efficacy_specificity.png").stat().st_size > 0
    assert (out / "time_to_edit.png").stat().st_size > 0
    report = (out / "report.html").read_text()  # the run's report, with its table and figures
    assert "<h2>Evaluation</h2>" in report and "efficacy_specificity.png" in report
    assert "samples.png" in report  # the before/after grid: a row per prompt, a method each
    # one folder per run: the events and the resolved config beside the results, no version_N
    assert list(out.glob("events.out.tfevents.*")) and (out / "config.yaml").exists()
    assert not list(tmp_path.rglob("version_*"))
    events = EventAccumulator(str(out))
    events.Reload()
    assert "edit/samples" in events.Tags()["images"]  # before/after, a row per method
