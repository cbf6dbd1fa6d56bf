"""The edit job end to end on the SD-1 miniature: artifacts, a null edit, LocoGen's window."""
# The miniature's 77 context tokens of width 32 span its whole text width, so it edits with the
# empty prompt free (keep_empty: false); the worlds and real models keep it.

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiffusionPipeline

from loco_lightning.cli import main
from loco_lightning.editing.edits import load_edit
from tests.helpers import miniature_job, two_process_job


def editors(**rows: dict) -> str:
    """``--model.editors`` of LocoEdit rows: name -> init_args."""
    free = {"keep_empty": False}
    return json.dumps(
        {n: {"class_path": "LocoEdit", "init_args": free | a} for n, a in rows.items()}
    )


def edit_args(tmp_path, *extra) -> list[str]:
    config = "configs/edit/sd1_style.yaml"
    return miniature_job("edit", config, tmp_path / "out", tmp_path / "tb", *extra)


def edit(tmp_path, *extra) -> list[dict]:
    main(edit_args(tmp_path, *extra))
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_null_edit_changes_no_score_and_has_zero_fid(tmp_path):
    null = {"sites": "all", "edit_k": False, "edit_v": False}
    table = edit(tmp_path, "--model.editors", editors(null=null))
    rows = {(r["method"], r["group"]): r for r in table}
    for group in ("efficacy", "generality", "specificity"):
        same, base = rows[("null", group)], rows[("unedited", group)]
        assert same["clip"] == pytest.approx(base["clip"], abs=1e-4)
        assert same["fid"] == pytest.approx(0.0, abs=1e-2)


def test_edited_by_skips_the_groups_an_editor_is_not_named_for_and_changes_nothing_else(tmp_path):
    rows = {
        "located": {"sites": [3, 4], "key_tokens": "aligned"},
        "everywhere": {"sites": "all", "key_tokens": "aligned"},
    }
    prompts = "datasets/world/style_striped.eval.yaml"  # all four groups, in batches that mix them
    args = ("--model.editors", editors(**rows), "--data.prompts", prompts, "--data.batch_size", "7")
    full = edit(tmp_path / "full", *args)
    only = json.dumps({"reference": [], "specificity": ["located"]})
    bar = edit(tmp_path / "bar", *args, "--data.edited_by", only)
    skipped = {("located", "reference"), ("everywhere", "reference"), ("everywhere", "specificity")}
    kept = [r for r in full if (r["method"], r["group"]) not in skipped]
    timing = ("seconds_to_edit",)
    assert len(kept) == len(full) - 3 and len(bar) == len(kept)
    for a, b in zip(bar, kept):  # every other score, bit for bit
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }


def test_edited_by_refuses_a_name_that_is_not_an_editor_before_any_work(tmp_path):
    rows = editors(located={"sites": [3, 4]})
    only = json.dumps({"specificity": ["locatd"]})
    with pytest.raises(ValueError, match=r"data.edited_by names \['locatd'\].*\['located'\]"):
        main(edit_args(tmp_path, "--model.editors", rows, "--data.edited_by", only))
    assert not (tmp_path / "out" / "results.json").exists()


def test_edit_writes_deltas_and_a_folder_plain_diffusers_loads(tmp_path):
    rows = editors(given={"sites": [5, 6]}, everywhere={"sites": "all"})
    table = edit(tmp_path, "--model.editors", rows)
    assert {(r["method"], r["group"]) for r in table} == {
        (m, g)
        for m in ("unedited", "given", "everywhere")
        for g in ("efficacy", "generality", "specificity")
    }
    out = tmp_path / "out"
    assert (out / "given.safetensors").exists() and (out / "results.md").exists()
    pipe = DiffusionPipeline.from_pretrained(out / "edited")
    from safetensors.torch import load_file

    deltas = load_file(out / "given.safetensors")
    assert len(deltas) == 4  # to_k and to_v at two sites
    assert all("attentions" in k and k.endswith(("to_k.weight", "to_v.weight")) for k in deltas)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert all(torch.isfinite(d).all() and d.abs().max() > 0 for d in deltas.values())


def test_locogen_choice_reads_the_selection_and_refuses_a_missing_one(tmp_path):
    (tmp_path / "loc").mkdir()
    (tmp_path / "loc" / "selection.json").write_text(json.dumps({"window": [7, 8], "best": {}}))
    rows = editors(located={"sites": "locogen"}, control={"sites": "random"})
    table = edit(tmp_path, "--model.editors", rows, "--model.locogen", str(tmp_path / "loc"))
    assert {r["method"] for r in table} >= {"located", "control"}
    sites = {
        m: load_edit(tmp_path / "out" / f"{m}.safetensors").metadata["params"]["sites"]
        for m in ("located", "control")
    }
    assert sites["located"] == [7, 8] and len(sites["control"]) == 2
    assert not set(sites["control"]) & {7, 8}
    with pytest.raises(FileNotFoundError, match="run `loco localize` first"):
        edit(tmp_path, "--model.editors", rows, "--model.locogen", str(tmp_path))


def test_two_process_ddp_gives_the_same_table(tmp_path):
    """The triad's metrics are made alike on every rank and synced by compute: two processes
    (each generating half of the 16 items) write the table one process writes."""
    rows = ["--model.editors", editors(given={"sites": [5, 6]})]
    single = edit(tmp_path / "one", *rows)
    two_process_job(*edit_args(tmp_path / "two", *rows))
    double = json.loads((tmp_path / "two" / "out" / "results.json").read_text())
    assert [(r["method"], r["group"], r["n"]) for r in double] == [
        (r["method"], r["group"], r["n"]) for r in single
    ]
    for a, b in zip(single, double):
        for key in ("clip", "fid"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-3), (a, b)
