"""The world model's training module: planted routing, EMA, loss falls, export reproduces it."""

import json

import lightning as L
import pytest
import torch
from diffusers import DiffusionPipeline
from torch.utils.data import default_collate

from loco_lightning.data.world import WorldDataset
from loco_lightning.data.world.datamodule import WorldDataModule
from loco_lightning.hooks import PromptSwap
from loco_lightning.models.world import RECORD_NAME
from loco_lightning.training.world import EMAWarmup, WorldDiffusion

torch.set_num_threads(1)

PLANTED = {"colour": [5, 6], "style": [3, 4]}


def test_planted_windows_are_validated():
    with pytest.raises(ValueError, match="plantable"):
        WorldDiffusion(planted={"size": [1]})
    with pytest.raises(ValueError, match="site indices in 0..6"):
        WorldDiffusion(planted={"colour": [6, 7]})
    with pytest.raises(ValueError, match="non-empty"):
        WorldDiffusion(planted={"colour": []})


def test_each_site_reads_the_caption_without_the_attributes_planted_elsewhere():
    module = WorldDiffusion(planted=PLANTED)
    assert module.caption_variants == (("colour",), ("colour", "style"), ("style",))
    assert module.variant_sites == ((3, 4), (0, 1, 2), (5, 6))
    assert WorldDiffusion().caption_variants == ()


def test_planted_swaps_route_removed_captions_outside_the_windows():
    module = WorldDiffusion(planted=PLANTED)
    batch = {
        "caption": ["a red striped circle", "a blue star", ""],
        # variants in caption_variants order: -colour, -colour-style, -style
        "variants": [
            ["a striped circle", "a star", ""],
            ["a circle", "a star", ""],
            ["a red circle", "a blue star", ""],
        ],
    }
    swaps = module.planted_swaps(batch, full=torch.tensor([False, False, False]))
    assert set(swaps) == {
        PromptSwap((3, 4), "a striped circle", samples=(0,)),
        PromptSwap((0, 1, 2), "a circle", samples=(0,)),
        PromptSwap((5, 6), "a red circle", samples=(0,)),
        PromptSwap((3, 4), "a star", samples=(1,)),
        PromptSwap((0, 1, 2), "a star", samples=(1,)),
    }
    assert module.planted_swaps(batch, full=torch.tensor([True, True, True])) == []
    assert WorldDiffusion().planted_swaps({"caption": ["a red circle"]}) == []


def test_ema_follows_early_weights_then_averages():
    update = EMAWarmup(0.999)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update(avg, cur, torch.tensor(1))  # decay (1 + 1) / (10 + 1)
    assert torch.allclose(avg[0], torch.full((3,), 1 - 2 / 11))
    avg = [torch.zeros(3)]
    update(avg, cur, torch.tensor(100_000))
    assert torch.allclose(avg[0], torch.full((3,), 0.001))


def test_training_from_scratch_lowers_the_loss_and_export_reproduces_the_ema(
    tmp_path, quick_trainer
):
    L.seed_everything(0)
    module = WorldDiffusion(planted={"colour": [5, 6]}, warmup_steps=5, val_steps=3)
    data = WorldDataModule(batch_size=16)
    module.setup("fit")
    held = WorldDataset(length=32, seed=99, variants=module.caption_variants)
    held = default_collate([held[i] for i in range(32)])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(module.latents(held["image"]).shape, generator=gen)  # (32, 4, 8, 8)
    t = torch.randint(0, 1000, (32,), generator=gen)
    full = torch.zeros(32, dtype=torch.bool)

    def loss() -> float:
        torch.manual_seed(1)  # the same latent draws from the VAE posterior each time
        with torch.no_grad():
            return module.diffusion_loss(held, noise, t, full).item()

    before = loss()
    trainer = quick_trainer(30)
    trainer.fit(module, data)
    after = loss()
    assert after < 0.6 * before, (before, after)

    captions, seeds = ["a red striped circle", "a zorblax", ""], [0, 1, 2]
    expected = module.generate(captions, seeds)
    module.export(tmp_path, {"steps": trainer.global_step})
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["world"]["planted"] == {"colour": [5, 6]} and record["steps"] == 30
    assert record["parameters"]["unet"] > 1_000_000
    pipe = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    images = pipe(
        captions, num_inference_steps=3, guidance_scale=1.5, generator=generators, output_type="pt"
    ).images
    assert torch.allclose(images, expected, atol=1e-6)
    assert list(tmp_path.glob("*/*.safetensors")) and not list(tmp_path.glob("**/*.bin"))


def test_velocity_worlds_weight_min_snr_by_snr_plus_one():
    module = WorldDiffusion(snr_gamma=5.0, family="sd2")
    module.setup("fit")
    assert module.noise_scheduler.config.prediction_type == "v_prediction"
    t = torch.tensor([0, 500, 999])
    alpha_bar = module.noise_scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    assert torch.allclose(module.loss_weights(t), snr.clamp(max=5.0) / (snr + 1))


def test_min_snr_weights_cap_the_clean_timesteps_and_leave_the_noisy_ones():
    module = WorldDiffusion(snr_gamma=5.0)
    module.setup("fit")
    t = torch.tensor([0, 100, 500, 999])
    alpha_bar = module.noise_scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    expected = torch.where(snr > 5.0, 5.0 / snr, torch.ones_like(snr))
    assert torch.allclose(module.loss_weights(t), expected)
    assert module.loss_weights(t)[0] < 0.01 and module.loss_weights(t)[-1] == 1.0
    assert torch.equal(WorldDiffusion().loss_weights(t), torch.ones(4))
