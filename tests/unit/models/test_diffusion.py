"""The shared model-and-sampler config: defaults resolved, results tied to the exact weights."""

from __future__ import annotations

import torch

from loco_lightning.hooks import sites
from loco_lightning.models.diffusion import Diffusion, weights_digest
from loco_lightning.models.sampling import denoise, make_scheduler
from tests.helpers import mini_model


def test_resolved_fills_every_default_from_the_family():
    model = mini_model("sd1")
    fam = model.family
    got = Diffusion(family="sd1", source="miniature").resolved(model)
    assert got["steps"] == fam.steps and got["guidance"] == fam.guidance
    assert got["scheduler"] == type(model.pipeline.scheduler).__name__
    assert (
        Diffusion(family="sd1", source="miniature", steps=3, guidance=1.0).resolved(model)["steps"]
        == 3
    )


def test_a_world_folder_brings_its_own_sampler_defaults():
    from loco_lightning.models import load_model
    from loco_lightning.models.world import SAMPLING

    model = load_model(source="world-sd1")
    got = Diffusion(source="world-sd1").resolved(model)
    assert (got["steps"], got["guidance"]) == (SAMPLING["steps"], SAMPLING["guidance"])
    assert got["family"] == "sd1" and got["source"] == "world-sd1"


def test_denoise_uses_these_settings_and_a_fresh_scheduler_each_time():
    model = mini_model("sd1")
    spec = Diffusion(family="sd1", source="miniature", steps=3, guidance=1.0)
    cond = model.encode(["a red circle"])
    expected = denoise(model, cond, [0], steps=3, guidance=1.0, scheduler=make_scheduler(model))
    assert torch.equal(spec.denoise(model, cond, [0]), expected)
    assert torch.equal(spec.denoise(model, cond, [0]), expected)  # no state carried over
    assert spec.sampler(model)["scheduler"] is not spec.sampler(model)["scheduler"]


def test_weights_digest_tells_edited_weights_apart_and_restores():
    unet = mini_model("sd1").denoiser
    before = weights_digest(unet)
    weight = unet.get_submodule(sites(unet)[0].path).to_k.weight
    with torch.no_grad():
        old = weight[0, 0].item()
        weight[0, 0] += 1.0
        changed = weights_digest(unet)
        weight[0, 0] = old
    assert changed != before and weights_digest(unet) == before
