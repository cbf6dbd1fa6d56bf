"""Diffusion transformers end to end on the PixArt miniature (28 blocks, each with a
cross-attention): LocoGen sweeps its windows through the CLI, LocoEdit edits the selected blocks,
and the export loads in plain diffusers as a PixArt pipeline with the edited weights."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiffusionPipeline

from loco_lightning.cli import main
from loco_lightning.editing.edits import load_edit
from loco_lightning.models import load_model
from tests.helpers import miniature_job

PAIRS = json.dumps([{"original": "a house in the style of Van Gogh", "target": "a house"}])


@pytest.fixture(scope="module")
def located(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pixart")
    main(
        miniature_job(
            "localize",
            "configs/localize/pixart_style.yaml",
            tmp / "localize",
            tmp / "tb",
            "--model.require_signal",
            "false",  # random weights: the reference moves no score
            "--data.pairs",
            PAIRS,
            "--data.window_sizes",
            "[1, 4]",
            "--data.seeds",
            "[0]",
        )
    )
    return tmp


def test_locogen_sweeps_every_window_of_the_28_blocks(located):
    rows = json.loads((located / "localize" / "windows.json").read_text())
    sizes = sorted({(r["m"], r["start"]) for r in rows})
    assert len(sizes) == 2 + 28 + 25  # original, all blocks, m=1, m=4
    selection = json.loads((located / "localize" / "selection.json").read_text())
    assert selection["diffusion"]["family"] == "pixart"
    assert all(0 <= s < 28 for s in selection["window"])


def test_locoedit_at_the_selected_blocks_exports_a_pixart_pipeline(located):
    out = located / "edit"
    main(
        miniature_job(
            "edit",
            "configs/edit/pixart_style.yaml",
            out,
            located / "tb",
            "--model.locogen",
            str(located / "localize"),
            "--data.seeds",
            "[0]",
        )
    )
    selection = json.loads((located / "localize" / "selection.json").read_text())
    edit = load_edit(out / "locoedit.safetensors")
    assert edit.component == "transformer"
    assert edit.metadata["params"]["sites"] == selection["window"]
    assert {k.rsplit(".", 1)[0] for k in edit.deltas} == {
        f"transformer_blocks.{s}.attn2.{p}" for s in selection["window"] for p in ("to_k", "to_v")
    }
    rows = json.loads((out / "results.json").read_text())
    methods = {"unedited", "locoedit", "locoedit_all", "locoedit_random"}
    assert {r["method"] for r in rows} == methods
    pipe = DiffusionPipeline.from_pretrained(out / "edited")
    assert type(pipe).__name__ == "PixArtAlphaPipeline"
    assert not (out / "lora").exists()  # diffusers loads no LoRA into PixArt pipelines
    base = load_model("pixart", "miniature").denoiser  # the weights the edit was made on
    for name, delta in edit.deltas.items():
        edited = pipe.transformer.get_parameter(name)
        assert torch.allclose(edited, base.get_parameter(name) + delta, atol=1e-6)
        assert delta.abs().max() > 0


def test_causal_tracing_restores_each_blocks_three_layers_in_order(tmp_path):
    main(
        miniature_job(
            "trace",
            "configs/trace/sd1_style.yaml",
            tmp_path / "trace",
            tmp_path / "tb",
            "--model.diffusion.family",
            "pixart",
            "--data.pairs",
            PAIRS,
        )
    )
    layers = json.loads((tmp_path / "trace" / "layers.json").read_text())
    blocks = [r["layer"] for r in layers if r["layer"].startswith("transformer_blocks.")]
    assert len(blocks) == 3 * 28  # self-attention, cross-attention, feed-forward per block
    assert blocks[:3] == [f"transformer_blocks.0.{p}" for p in ("attn1", "attn2", "ff")]
    assert blocks[-1] == "transformer_blocks.27.ff"


def test_esd_fine_tunes_the_cross_attention_of_every_block(tmp_path):
    from safetensors.torch import load_file

    from tests.unit.baselines.test_finetune import fit

    fit("esd", tmp_path, 2, "--model.diffusion.family", "pixart")
    deltas = load_file(tmp_path / "esd.safetensors")
    assert all(".attn2." in k for k in deltas)  # the cross-attentions only
    assert {k.split(".attn2.")[0] for k in deltas} == {f"transformer_blocks.{b}" for b in range(28)}
    assert all(torch.isfinite(d).all() for d in deltas.values())


def test_the_dit_localizer_ranks_the_blocks_beside_locogen_and_feeds_locoedit(located):
    """One generation per prompt, a contribution per block; its selection.json has LocoGen's
    format, so an editor's ``sites: locogen`` reads it the same way."""
    out = located / "contribution"
    main(
        miniature_job(
            "contribution",
            "configs/contribution/pixart_style.yaml",
            out,
            located / "tb",
            "--data.pairs",
            PAIRS,
            "--model.locogen",
            str(located / "localize"),
        )
    )
    rows = json.loads((out / "sites.json").read_text())
    assert [r["site"] for r in rows] == list(range(28))
    assert sorted(r["rank"] for r in rows) == list(range(1, 29))
    selection = json.loads((out / "selection.json").read_text())
    top = sorted(r["site"] for r in rows if r["rank"] <= 6)
    assert selection["window"] == top and selection["top_k"] == 6
    locogen = json.loads((located / "localize" / "selection.json").read_text())["window"]
    assert selection["locogen"] == locogen
    assert selection["overlap"] == sorted(set(top) & set(locogen))
    assert (out / "contribution.png").exists() and (out / "report.html").exists()

    edit = [
        "--model.locogen",
        str(out),
        "--model.editors",
        json.dumps({"top6": {"class_path": "LocoEdit", "init_args": {"sites": "locogen"}}}),
        "--data.seeds",
        "[0]",
    ]
    main(
        miniature_job(
            "edit", "configs/edit/pixart_style.yaml", located / "e6", located / "tb", *edit
        )
    )
    assert load_edit(located / "e6" / "top6.safetensors").metadata["params"]["sites"] == top
