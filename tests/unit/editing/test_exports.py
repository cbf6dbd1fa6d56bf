"""Exports a diffusers user loads with one line: the exact LoRA of an edit and the pipeline folder
with its model card."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline

from loco_lightning.editing.exports import (
    export_lora,
    export_pipeline,
    lora_factors,
    lora_state_dict,
    model_card,
)
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.neurons import Neurons
from loco_lightning.editing.requests import EditRequest
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.pipeline import packaged

STRIPED = EditRequest("striped", "", ("a red {} circle", "a blue {} square"))


def test_lora_factors_have_the_deltas_rank_and_multiply_back_to_it():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(40, 3, generator=g) @ torch.randn(3, 24, generator=g)
    a, b = lora_factors(delta)
    assert a.shape == (3, 24) and b.shape == (40, 3)
    assert torch.allclose(b @ a, delta, atol=1e-5 * delta.abs().max())


def plain_pipeline(source: str, model, tmp_path) -> StableDiffusionPipeline:
    """The base model as a diffusers user loads it, without loco-lightning in the way."""
    if source == "miniature":
        model.pipeline.save_pretrained(tmp_path / "base")
        source = str(tmp_path / "base")
    return StableDiffusionPipeline.from_pretrained(packaged(source))


@pytest.mark.parametrize(
    ("source", "editor"),
    [
        ("world-sd1", LocoEdit(sites=(1, 2, 3))),
        ("miniature", LocoEdit(sites=(1, 2), keep_empty=False)),
        ("miniature", Neurons(sites=(2,), k=3, mode="zero")),  # weights and biases
    ],
    ids=["world-locoedit", "miniature-locoedit", "miniature-neurons-with-bias"],
)
def test_the_lora_loaded_by_diffusers_gives_the_edited_weights(source, editor, tmp_path):
    model = Diffusion(family="sd1", source=source).load()
    edit = editor.compute(model, [STRIPED])
    lora = lora_state_dict(edit)
    ranks = [v.shape[1] for k, v in lora.items() if k.endswith("lora_B.weight")]
    if isinstance(editor, LocoEdit):  # rank <= key rows: two templates' concept tokens
        assert max(ranks) <= 2 * len(STRIPED.templates) + 1
    export_lora(edit, tmp_path / "lora")
    pipe = plain_pipeline(source, model, tmp_path)
    pipe.load_lora_weights(str(tmp_path / "lora"))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = dict(pipe.unet.named_parameters())
    with edit.applied(model):
        edited = {k: v.detach().clone() for k, v in model.denoiser.named_parameters()}
    for name in edit.deltas:
        error = (fused[name] - edited[name]).abs().max() / edited[name].abs().max()
        assert error <= 1e-5, (name, float(error))
    untouched = [k for k in edited if k not in edit.deltas]
    assert all(torch.equal(fused[k], edited[k]) for k in untouched)


def test_the_exported_pipeline_carries_a_model_card_and_no_absolute_path(tmp_path):
    model = Diffusion(source="world-sd1").load()
    diffusion = Diffusion(source="world-sd1")
    edit = LocoEdit(sites=(2,)).compute(model, [STRIPED])
    edit.metadata |= {"editor": "locoedit", "requests": [{"concept": "striped", "target": ""}]}
    table = [{"method": "locoedit", "group": "efficacy", "n": 4, "clip": 21.5}]
    base = diffusion.resolved(model)
    card = model_card(base, "locoedit", edit, table, "loco edit --config x.yaml")
    with edit.applied(model):
        export_pipeline(model, tmp_path / "edited", card, base["source"])
    text = (tmp_path / "edited" / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["base_model"] == "world-sd1" and front["library_name"] == "diffusers"
    loco = front["loco"]
    assert loco["base"]["weights"] == base["weights"] and loco["command"].startswith("loco edit")
    assert loco["changed_modules"] == [
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
    ]
    assert loco["metrics"] == table and loco["requests"][0]["concept"] == "striped"
    configs = [
        tmp_path / "edited" / "model_index.json",
        *(tmp_path / "edited").glob("*/config.json"),
    ]
    names = [json.loads(c.read_text()).get("_name_or_path") for c in configs]
    assert "world-sd1/unet" in names and not any(n and n.startswith("/") for n in names)
    assert (tmp_path / "edited" / "loco_world.json").exists()  # readers and scorer go along
    again = StableDiffusionPipeline.from_pretrained(tmp_path / "edited")
    site = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    with edit.applied(model):
        assert torch.equal(
            dict(again.unet.named_parameters())[site], model.denoiser.get_parameter(site)
        )
