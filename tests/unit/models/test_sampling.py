"""The shared denoising loop: batched generation equals one image at a time."""

from __future__ import annotations

import pytest
import torch

from loco_lightning.models.sampling import call_options, denoise


def test_batch_equals_one_at_a_time_for_every_family(mini):
    prompts, seeds = ["a red circle", "a blue square", "a cat"], [3, 4, 5]
    batched = denoise(mini, mini.encode(prompts), seeds, steps=3, guidance=2.0)
    assert batched.shape[:2] == (3, 3) and batched.min() >= 0 and batched.max() <= 1
    for i, (p, s) in enumerate(zip(prompts, seeds)):
        single = denoise(mini, mini.encode([p]), [s], steps=3, guidance=2.0)
        assert (batched[i] - single[0]).abs().max() <= 1e-5


def test_seeds_decide_the_image(sd1):
    cond = sd1.encode(["a red circle"] * 2)
    a = denoise(sd1, cond, [0, 1], steps=2)
    b = denoise(sd1, cond, [0, 1], steps=2)
    assert torch.equal(a, b) and (a[0] - a[1]).abs().max() > 1e-3


def test_one_seed_per_prompt(sd1):
    with pytest.raises(ValueError, match="Got 1 seeds for 2 prompts"):
        denoise(sd1, sd1.encode(["a", "b"]), [0], steps=2)


def test_another_scheduler_is_built_from_the_pipelines_config(sd1):
    from loco_lightning.models.sampling import make_scheduler

    own = make_scheduler(sd1)
    fast = make_scheduler(sd1, "DPMSolverMultistepScheduler")
    assert type(own) is type(sd1.pipeline.scheduler) and own is not sd1.pipeline.scheduler
    assert type(fast).__name__ == "DPMSolverMultistepScheduler"
    assert fast.config.beta_schedule == sd1.pipeline.scheduler.config.beta_schedule
    cond = sd1.encode(["a red circle"])
    images = denoise(sd1, cond, [0], steps=3, scheduler=fast)
    assert images.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="no scheduler class 'Nope'"):
        make_scheduler(sd1, "Nope")


def test_if_samples_with_its_own_ddpm_as_its_pipeline_does_and_with_a_fixed_variance_sampler():
    """IF's learned variance goes to a sampler that reads it (its DDPM, stochastic: each row's
    generator continues from its starting noise, as in ``IFPipeline.__call__``) and is dropped
    for one that does not (DDIM), instead of failing on six channels."""
    from loco_lightning.models.sampling import make_scheduler
    from tests.helpers import mini_model

    model = mini_model("if")
    prompts, seeds = ["a red circle", "a blue square"], [3, 4]
    ours = denoise(model, model.encode(prompts), seeds, steps=3, guidance=2.0)
    theirs = model.pipeline(
        prompts,
        num_inference_steps=3,
        guidance_scale=2.0,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
        clean_caption=False,
    ).images
    assert torch.allclose(ours, torch.from_numpy(theirs).permute(0, 3, 1, 2), atol=1e-5)
    ddim = make_scheduler(model, "DDIMScheduler")
    images = denoise(model, model.encode(prompts), seeds, steps=3, scheduler=ddim)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


# Per family: the plain call's options (PixArt's and SANA's resolution bins know no miniature
# size; FLUX masks no padding, so T5 pads to the miniature tokenizer's 77 as ours does), and
# how close the images must be.
_NO_BINS = {"use_resolution_binning": False, "clean_caption": False}
PIPELINE_CALLS = {
    "pixart": (_NO_BINS, 1e-6),
    "pixart_sigma": (_NO_BINS, 1e-6),
    "sana": (_NO_BINS, 1e-6),
    "sd3": ({}, 1e-5),
    "flux": ({}, 1e-5),
}


@pytest.mark.parametrize("family", list(PIPELINE_CALLS))
def test_transformer_denoise_gives_the_pipelines_own_images(family):
    """Same noise, same flow: the transformer's learned sigma is dropped and the padding mask
    goes with each row, as in ``PixArtAlphaPipeline.__call__``; SANA's prompts follow its
    instruction and its empty prompt does not, its sampler predicts flow; SD3: CLIP-L ‖ CLIP-G
    padded beside T5, pooled CLIP, flow-matching Euler, the VAE's shift; FLUX: T5 and pooled
    CLIP-L, packed latents, shifted sigmas, the scale as an input."""
    from tests.helpers import mini_model

    model = mini_model(family)
    options, tolerance = PIPELINE_CALLS[family]
    prompts, seeds = ["a red circle", "a blue dotted square"], [3, 4]
    ours = denoise(model, model.encode(prompts), seeds, steps=4)
    theirs = model.pipeline(  # call_options: the size, SD3's and FLUX's T5 length
        prompts,
        num_inference_steps=4,
        guidance_scale=model.guidance,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="pt",
        **options,
        **call_options(model),
    ).images
    assert (ours - theirs).abs().max() <= tolerance and ours.std() > 0.01


@pytest.mark.parametrize("name", ["DDIMScheduler", "DPMSolverMultistepScheduler"])
def test_an_early_decision_decodes_the_clean_latents_predicted_at_that_step(sd1, name):
    """After ``stop`` of the steps, the image is the decoded x0 the noise prediction implies
    there, x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), recomputed here from the UNet's own
    input and output at that call; with every step, the finished image."""
    from loco_lightning.models.sampling import make_scheduler

    seen = []
    hook = sd1.denoiser.register_forward_hook(
        lambda m, args, kw, out: seen.append((kw["sample"], kw["timestep"], out.sample)),
        with_kwargs=True,
    )
    try:
        cond = sd1.encode(["a red circle"])
        early = denoise(
            sd1, cond, [0], steps=4, guidance=1.0, scheduler=make_scheduler(sd1, name), stop=2
        )
    finally:
        hook.remove()
    assert len(seen) == 2  # the last two steps were never run
    x, t, eps = seen[-1]
    sched = make_scheduler(sd1, name)
    a = sched.alphas_cumprod[int(t)]
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    if sched.config.get("clip_sample"):  # DDIM's default, as the sampler itself does
        x0 = x0.clamp(-sched.config.clip_sample_range, sched.config.clip_sample_range)
    vae = sd1.pipeline.vae
    expected = (vae.decode(x0 / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    assert (early - expected).abs().max() <= 1e-4
    full = denoise(sd1, cond, [0], steps=4, guidance=1.0, scheduler=make_scheduler(sd1, name))
    assert torch.equal(
        full,
        denoise(sd1, cond, [0], steps=4, guidance=1.0, scheduler=make_scheduler(sd1, name), stop=4),
    )


def test_an_early_decision_needs_a_sampler_that_predicts_the_clean_image(sd1):
    from loco_lightning.models.sampling import make_scheduler

    with pytest.raises(ValueError, match="PNDMScheduler does not predict the clean image"):
        denoise(
            sd1,
            sd1.encode(["a"]),
            [0],
            steps=3,
            scheduler=make_scheduler(sd1, "PNDMScheduler"),
            stop=1,
        )
    with pytest.raises(ValueError, match="stop=5: give a step in 1..3"):
        denoise(sd1, sd1.encode(["a"]), [0], steps=3, stop=5)
