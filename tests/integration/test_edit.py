"""The edit job end to end on the SD-1 miniature: artifacts, a null edit, LocoGen's window."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiffusionPipeline

from loco_lightning.cli import main
from loco_lightning.editing.locoedit import read_delta
from tests.helpers import tiny_clip_folder


def edit(tmp_path, *extra) -> list[dict]:
    main(
        [
            "edit",
            "--config",
            "configs/edit/sd1_style.yaml",
            "--model.diffusion.source",
            "miniature",
            "--model.clip",
            tiny_clip_folder(),
            "--model.diffusion.dtype",
            "float32",
            "--model.diffusion.steps",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--model.output_dir",
            str(tmp_path / "out"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "tb"),
            *extra,
        ]
    )
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_null_edit_changes_no_score_and_has_zero_fid(tmp_path):
    table = edit(
        tmp_path,
        "--model.site_choices",
        "[all]",
        "--model.edit_k",
        "false",
        "--model.edit_v",
        "false",
    )
    rows = {(r["method"], r["group"]): r for r in table}
    for group in ("efficacy", "generality", "specificity"):
        same, base = rows[("locoedit/all", group)], rows[("unedited", group)]
        assert same["clip"] == pytest.approx(base["clip"], abs=1e-4)
        assert same["fid"] == pytest.approx(0.0, abs=1e-2)


def test_edit_writes_deltas_and_a_folder_plain_diffusers_loads(tmp_path):
    table = edit(tmp_path, "--model.site_choices", "[given, all]", "--model.sites", "[5, 6]")
    assert {(r["method"], r["group"]) for r in table} == {
        (m, g)
        for m in ("unedited", "locoedit/given", "locoedit/all")
        for g in ("efficacy", "generality", "specificity")
    }
    out = tmp_path / "out"
    assert (out / "locoedit_given.safetensors").exists() and (out / "results.md").exists()
    pipe = DiffusionPipeline.from_pretrained(out / "edited")
    from safetensors.torch import load_file

    deltas = load_file(out / "locoedit_given.safetensors")
    assert len(deltas) == 4  # to_k and to_v at two sites
    assert all("attentions" in k and k.endswith(("to_k.weight", "to_v.weight")) for k in deltas)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert all(torch.isfinite(d).all() and d.abs().max() > 0 for d in deltas.values())


def test_locogen_choice_reads_the_selection_and_refuses_a_missing_one(tmp_path):
    (tmp_path / "loc").mkdir()
    (tmp_path / "loc" / "selection.json").write_text(json.dumps({"window": [7, 8], "best": {}}))
    table = edit(
        tmp_path,
        "--model.site_choices",
        "[locogen, random]",
        "--model.locogen",
        str(tmp_path / "loc"),
    )
    assert {r["method"] for r in table} >= {"locoedit/locogen", "locoedit/random"}
    sites = {
        m: read_delta(tmp_path / "out" / f"locoedit_{m}.safetensors")[1]["params"]["sites"]
        for m in ("locogen", "random")
    }
    assert sites["locogen"] == [7, 8] and len(sites["random"]) == 2 and sites["random"] != [7, 8]
    with pytest.raises(FileNotFoundError, match="run `loco localize` first"):
        edit(tmp_path, "--model.site_choices", "[locogen]", "--model.locogen", str(tmp_path))
