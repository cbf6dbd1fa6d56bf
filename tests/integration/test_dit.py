"""Diffusion transformers end to end on the PixArt and SANA miniatures (28 and 20 blocks, each
with a cross-attention): LocoGen sweeps their windows through the CLI, LocoEdit edits the selected
blocks, and the export loads in plain diffusers as the family's pipeline with the edited
weights."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DiffusionPipeline

from loco_lightning.cli import main
from loco_lightning.editing.edits import load_edit
from loco_lightning.models import load_model
from loco_lightning.models.pipeline import infer_family
from tests.helpers import miniature_job

PAIRS = json.dumps([{"original": "a house in the style of Van Gogh", "target": "a house"}])


def locate(config: str, tmp) -> None:
    """LocoGen through the CLI on a miniature: windows of 1 and 4 blocks, one seed."""
    main(
        miniature_job(
            "localize",
            config,
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


BLOCKS = {"pixart": 28, "sana": 20}
PIPELINES = {
    "pixart": "PixArtAlphaPipeline",
    "sana": "SanaPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}


@pytest.fixture(scope="module", params=list(BLOCKS))
def located(tmp_path_factory, request):
    family = request.param
    tmp = tmp_path_factory.mktemp(family)
    locate(f"configs/localize/{family}_style.yaml", tmp)
    return family, tmp


def test_locogen_sweeps_every_window_of_the_blocks(located):
    family, located = located
    n = BLOCKS[family]
    rows = json.loads((located / "localize" / "windows.json").read_text())
    sizes = sorted({(r["m"], r["start"]) for r in rows})
    assert len(sizes) == 2 + n + (n - 3)  # original, all blocks, m=1, m=4
    selection = json.loads((located / "localize" / "selection.json").read_text())
    assert selection["diffusion"]["family"] == family
    assert all(0 <= s < n for s in selection["window"])


def test_locoedit_at_the_selected_blocks_exports_the_familys_pipeline(located):
    family, located = located
    out = located / "edit"
    main(
        miniature_job(
            "edit",
            f"configs/edit/{family}_style.yaml",
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
    assert type(pipe).__name__ == PIPELINES[family]
    assert infer_family(str(out / "edited")) == family  # family: auto finds it again
    base = load_model(family, "miniature")  # the weights the edit was made on
    for name, delta in edit.deltas.items():
        edited = pipe.transformer.get_parameter(name)
        assert torch.allclose(edited, base.denoiser.get_parameter(name) + delta, atol=1e-6)
        assert delta.abs().max() > 0
    if family == "pixart":
        assert not (out / "lora").exists()  # diffusers loads no LoRA into PixArt pipelines
        return
    lora = load_model(family, "miniature").pipeline  # SANA's pipeline loads LoRA: fused, the edit
    lora.load_lora_weights(out / "lora")
    lora.fuse_lora()
    for name, delta in edit.deltas.items():
        fused = lora.transformer.get_parameter(name)
        assert torch.allclose(fused, base.denoiser.get_parameter(name) + delta, atol=1e-6)


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
    family, located = located
    n = BLOCKS[family]
    out = located / "contribution"
    main(
        miniature_job(
            "contribution",
            f"configs/contribution/{family}_style.yaml",
            out,
            located / "tb",
            "--data.pairs",
            PAIRS,
            "--model.locogen",
            str(located / "localize"),
        )
    )
    rows = json.loads((out / "sites.json").read_text())
    assert [r["site"] for r in rows] == list(range(n))
    assert sorted(r["rank"] for r in rows) == list(range(1, n + 1))
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
            "edit", f"configs/edit/{family}_style.yaml", located / "e6", located / "tb", *edit
        )
    )
    assert load_edit(located / "e6" / "top6.safetensors").metadata["params"]["sites"] == top


def exported_exactly(out, family: str, edit) -> None:
    """The edit job's ``edited/`` pipeline loads as the family's diffusers class and, like its
    ``lora/`` loaded into the base pipeline, holds the base weights plus each delta."""
    pipe = DiffusionPipeline.from_pretrained(out / "edited")
    assert type(pipe).__name__ == PIPELINES[family]
    assert infer_family(str(out / "edited")) == family
    base = load_model(family, "miniature")
    lora = load_model(family, "miniature").pipeline
    lora.load_lora_weights(out / "lora")
    lora.fuse_lora()
    for name, delta in edit.deltas.items():
        expected = base.denoiser.get_parameter(name) + delta
        assert delta.abs().max() > 0
        assert torch.allclose(pipe.transformer.get_parameter(name), expected, atol=1e-6)
        assert torch.allclose(lora.transformer.get_parameter(name), expected, atol=1e-6)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_uce_embedder_exports_the_caption_layers_edit(family, tmp_path):
    """UCE's edit of diffusion transformers through the edit job (no LocoGen run needed); the
    miniatures' empty caption spans context_embedder's inputs, so it is left free here."""
    out = tmp_path / "edit"
    editors = {"uce": {"class_path": "UCEEmbedder", "init_args": {"keep_empty": False}}}
    main(
        miniature_job(
            "edit",
            f"configs/edit/{family}_style.yaml",
            out,
            tmp_path / "tb",
            "--model.editors",
            json.dumps(editors),
            "--data.seeds",
            "[0]",
        )
    )
    edit = load_edit(out / "uce.safetensors")
    assert set(edit.deltas) == {
        "context_embedder.weight", "time_text_embed.text_embedder.linear_1.weight"
    }  # fmt: skip
    exported_exactly(out, family, edit)


@pytest.fixture(scope="module")
def sd3_located(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sd3")
    locate("configs/localize/sd3_style.yaml", tmp_path)
    return tmp_path


def test_locogen_sweeps_the_joint_attention_blocks_of_sd3(sd3_located):
    tmp_path = sd3_located
    rows = json.loads((tmp_path / "localize" / "windows.json").read_text())
    assert len({(r["m"], r["start"]) for r in rows}) == 2 + 24 + 21
    selection = json.loads((tmp_path / "localize" / "selection.json").read_text())
    assert selection["diffusion"]["family"] == "sd3"
    assert all(0 <= s < 24 for s in selection["window"])
    # the all-blocks row is the target prompt's own text at every block: a different image
    clip = {(r["m"], r["start"]): r["clip_mean"] for r in rows}
    assert clip[(24, 0)] != clip[(0, 0)]


def test_locoedit_at_sd3s_selected_blocks_exports_an_sd3_pipeline(sd3_located):
    """The closed form on the text stream's add_k_proj/add_v_proj of the selected blocks; the
    miniature's text stream is 16 wide, which the empty prompt's 333 tokens span, so keeping it
    exactly leaves the directions below a tenth of its largest singular value free."""
    out = sd3_located / "edit"
    editors = {
        "locoedit": {"class_path": "LocoEdit", "init_args": {"sites": "locogen", "keep_rtol": 0.1}}
    }
    main(
        miniature_job(
            "edit",
            "configs/edit/sd3_style.yaml",
            out,
            sd3_located / "tb",
            "--model.locogen",
            str(sd3_located / "localize"),
            "--model.editors",
            json.dumps(editors),
            "--data.seeds",
            "[0]",
        )
    )
    window = json.loads((sd3_located / "localize" / "selection.json").read_text())["window"]
    edit = load_edit(out / "locoedit.safetensors")
    assert {k.rsplit(".", 1)[0] for k in edit.deltas} == {
        f"transformer_blocks.{s}.attn.{p}" for s in window for p in ("add_k_proj", "add_v_proj")
    }
    assert 0 <= edit.metadata["empty_drift"] < 0.5  # measured on the first step's stream
    exported_exactly(out, "sd3", edit)


def test_the_dit_localizer_ranks_sd3s_joint_blocks(sd3_located):
    out = sd3_located / "contribution"
    main(
        miniature_job(
            "contribution",
            "configs/contribution/sd3_style.yaml",
            out,
            sd3_located / "tb",
            "--data.pairs",
            PAIRS,
            "--model.locogen",
            str(sd3_located / "localize"),
        )
    )
    rows = json.loads((out / "sites.json").read_text())
    assert [r["site"] for r in rows] == list(range(24))
    assert sorted(r["rank"] for r in rows) == list(range(1, 25))
    assert all(r["contribution_mean"] > 0 for r in rows)


@pytest.fixture(scope="module")
def flux_located(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("flux")
    locate("configs/localize/flux_style.yaml", tmp_path)
    return tmp_path


def test_locogen_sweeps_fluxs_double_and_single_stream_blocks(flux_located, tmp_path):
    from loco_lightning.editing.editors import choose_sites
    from loco_lightning.hooks import sites

    rows = json.loads((flux_located / "localize" / "windows.json").read_text())
    assert len({(r["m"], r["start"]) for r in rows}) == 2 + 57 + 54
    selection = json.loads((flux_located / "localize" / "selection.json").read_text())
    assert selection["diffusion"]["family"] == "flux"
    # the random control is a window of the same kind of block as the located one: for a
    # double-stream window, double-stream blocks only (single-stream ones cannot be edited)
    model = load_model("flux", "miniature")
    found = sites(model.denoiser)
    (tmp_path / "selection.json").write_text(json.dumps({**selection, "window": [17, 18]}))
    controls = {choose_sites("random", model, str(tmp_path), seed) for seed in range(8)}
    for control in controls:
        assert len(control) == 2 and not set(control) & {17, 18}
        assert {found[i].kind for i in control} == {"joint"}, control


def test_locoedit_at_fluxs_double_stream_blocks_exports_a_flux_pipeline(flux_located):
    out = flux_located / "edit"
    editors = {"first3": {"class_path": "LocoEdit", "init_args": {"sites": [0, 1, 2]}}}
    main(
        miniature_job(
            "edit",
            "configs/edit/flux_style.yaml",
            out,
            flux_located / "tb",
            "--model.locogen",
            str(flux_located / "localize"),
            "--model.editors",
            json.dumps(editors),
            "--data.seeds",
            "[0]",
        )
    )
    edit = load_edit(out / "first3.safetensors")
    assert {k.rsplit(".", 1)[0] for k in edit.deltas} == {
        f"transformer_blocks.{s}.attn.{p}" for s in (0, 1, 2) for p in ("add_k_proj", "add_v_proj")
    }
    exported_exactly(out, "flux", edit)


def test_the_dit_localizer_ranks_fluxs_57_blocks(flux_located):
    out = flux_located / "contribution"
    main(
        miniature_job(
            "contribution",
            "configs/contribution/flux_style.yaml",
            out,
            flux_located / "tb",
            "--data.pairs",
            PAIRS,
        )
    )
    rows = json.loads((out / "sites.json").read_text())
    assert [r["site"] for r in rows] == list(range(57))
    assert all(r["contribution_mean"] > 0 for r in rows)
