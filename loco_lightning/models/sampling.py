"""The denoising loop every job shares: the pipeline's own scheduler, per-sample seeds."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Literal

import diffusers
import numpy as np
import torch
from torch import Tensor

from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.models.pipeline import Conditioning, LocoModel, t5_length
from loco_lightning.models.schedulers import predicts_flow, step_options


def make_scheduler(model: LocoModel, name: str | None = None):
    """A fresh scheduler: ``name``, else the one the job chose for the model, else the
    pipeline's own; another diffusers class is built from the pipeline's config (e.g.
    ``DPMSolverMultistepScheduler`` for fewer steps)."""
    name = name or model.sampling.get("scheduler")
    cls = type(model.pipeline.scheduler) if name is None else getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"diffusers has no scheduler class {name!r}; e.g. DDIMScheduler.")
    return cls.from_config(model.pipeline.scheduler.config)


NoiseMode = Literal["per_prompt", "shared"]
LEARNED_VARIANCE = ("learned", "learned_range")  # samplers that read a model's predicted variance
PROMPT_STRIDE = 1_000_003  # per_prompt: noise seed = seed * PROMPT_STRIDE + prompt index


def noise_seed(seed: int, index: int, noise: NoiseMode) -> int:
    """The starting-noise seed of prompt ``index`` under ``seed``: ``shared`` uses the seed itself
    for every prompt (the reference scripts), ``per_prompt`` gives every prompt its own noise, so
    one seed's noise cannot bias a whole set of prompts the same way."""
    return seed if noise == "shared" else seed * PROMPT_STRIDE + index


def reads_variance(scheduler) -> bool:
    """Whether ``scheduler`` samples with the model's predicted variance (IF's DDPM)."""
    takes = "variance_type" in inspect.signature(type(scheduler).__init__).parameters
    return takes and scheduler.config.variance_type in LEARNED_VARIANCE


def row_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per row, seeded ``seeds[i]``: what a pipeline is given as ``generator``."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def initial_noise(
    model: LocoModel, seeds: Sequence[int], generators: Sequence[torch.Generator] | None = None
) -> Tensor:
    """(B, C, S, S) starting noise, row i drawn from ``seeds[i]`` alone (or from ``generators[i]``,
    which then continue into the sampler's own noise, as in a pipeline's ``__call__``).

    Drawing per row makes a batched sweep and a one-image-at-a-time loop start from identical noise.
    """
    shape = kind_of(model.denoiser).noise_shape(model.denoiser, model.pipeline)
    generators = row_generators(seeds) if generators is None else generators
    noise = [torch.randn(shape, generator=g) for g in generators]
    return torch.stack(noise).to(model.device, model.denoiser.dtype)


def call_options(model: LocoModel) -> dict:
    """Options that make the pipeline's own ``__call__`` give the project's images: SD3's and
    FLUX's T5 length (their padding is not masked), and the image size (FluxPipeline defaults to
    1024 px whatever the model; the project takes the autoencoder's ``sample_size``)."""
    pipe, family = model.pipeline, model.family
    options = {}
    length = t5_length(pipe, family)
    if length is not None:
        options["max_sequence_length"] = length
    if getattr(pipe, "vae", None) is not None:
        side = kind_of(model.denoiser).noise_shape(model.denoiser, pipe)[-1]
        options["height"] = options["width"] = side * pipe.vae_scale_factor
    return options


def predicted_clean(scheduler, result, sample: Tensor, output: Tensor, sigma) -> Tensor:
    """The clean sample (x0) ``scheduler`` predicted in the step that gave ``result`` from
    ``sample`` and the model's ``output`` at noise level ``sigma``."""
    x0 = getattr(result, "pred_original_sample", None)
    if x0 is None and scheduler.config.get("algorithm_type") in ("dpmsolver++", "sde-dpmsolver++"):
        x0 = scheduler.model_outputs[-1]  # DPM-Solver++ keeps each step's x0 prediction there
    if x0 is None and predicts_flow(scheduler):  # x_t = (1 - s) x0 + s noise; v = noise - x0
        x0 = sample - sigma * output
    if x0 is None:
        raise ValueError(
            f"{type(scheduler).__name__} does not predict the clean image in its steps, so an "
            "early decision cannot be read from it: sample with DDIMScheduler, DDPMScheduler, "
            "EulerDiscreteScheduler, DPMSolverMultistepScheduler or (flow models) "
            "FlowMatchEulerDiscreteScheduler (model.diffusion.scheduler), or leave "
            "model.decide_at at 1."
        )
    return x0


def told_guidance(model: LocoModel, cond: Conditioning, guidance: float) -> Conditioning:
    """``cond`` with the guidance scale as an input where the denoiser takes one (FLUX.1-dev's
    distilled guidance: no unconditional batch); unchanged elsewhere."""
    if not model.family.guidance_embedded:
        return cond
    scale = torch.full((cond.context.shape[0],), float(guidance), device=model.device)
    return cond._replace(added={**(cond.added or {}), "guidance": scale})


def set_timesteps(model: LocoModel, sched, steps: int, x: Tensor) -> None:
    """The sampler's timesteps for ``steps`` on latents ``x``, as the pipeline sets them:
    ``FluxPipeline`` (and any flow sampler with dynamic shifting) gives its own sigmas, 1 down to
    1/steps, shifted by the image's token count when the scheduler shifts dynamically."""
    c = sched.config
    if model.family.encoding != "flux" and not c.get("use_dynamic_shifting"):
        sched.set_timesteps(steps, device=model.device)
        return
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    tokens = x.shape[1] if x.ndim == 3 else x.shape[-1] * x.shape[-2]
    mu = calculate_shift(  # FluxPipeline's defaults where the config has none
        tokens,
        c.get("base_image_seq_len", 256),
        c.get("max_image_seq_len", 4096),
        c.get("base_shift", 0.5),
        c.get("max_shift", 1.15),
    )
    sigmas = np.linspace(1.0, 1 / steps, steps)
    sched.set_timesteps(sigmas=sigmas, mu=mu, device=model.device)


@torch.no_grad()
def denoise(
    model: LocoModel,
    cond: Conditioning,
    seeds: Sequence[int],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler=None,
    stop: int | None = None,
) -> Tensor:
    """Generate one image per conditional row of ``cond``.

    Under guidance the UNet batch is ``[unconditional; conditional]`` (the empty prompt first),
    the layout :func:`loco_lightning.hooks.intervene` assumes with ``cfg=True``. Run it inside
    ``intervene(...)`` to generate with interventions.

    Args:
        model: the loaded model.
        cond: conditional inputs, B rows.
        seeds: B seeds for the starting noise.
        steps: denoising steps (family default if None).
        guidance: classifier-free guidance scale (family default if None; <= 1 turns it off).
        scheduler: a scheduler to use instead of a fresh copy of the pipeline's own.
        stop: decide early: after this many of the ``steps``, return the image the sampler
            predicts as clean (x0) from there, instead of the remaining steps.

    Returns:
        (B, 3, H, W) images in [0, 1], float32.
    """
    fam, pipe, net = model.family, model.pipeline, model.denoiser
    forward = kind_of(net).forward
    steps = model.steps if steps is None else steps
    guidance = model.guidance if guidance is None else guidance
    if steps < 1 or not (math.isfinite(guidance) and guidance >= 0):
        raise ValueError(
            f"steps={steps}, guidance={guidance}: give steps >= 1 and a finite scale >= 0 "
            "(<= 1 turns guidance off)."
        )
    n = cond.context.shape[0]
    if len(seeds) != n:
        raise ValueError(f"Got {len(seeds)} seeds for {n} prompts; give one seed per prompt.")
    sched = scheduler or make_scheduler(model)
    use_cfg = model.guided(guidance)
    inputs = cond
    if use_cfg:
        inputs = model.empty().expand(n).cat(cond)
    else:
        inputs = told_guidance(model, inputs, guidance)
    kind = kind_of(net)
    generators = row_generators(seeds)
    x = initial_noise(model, seeds, generators) * getattr(sched, "init_noise_sigma", 1.0)
    x = kind.pack(x)
    step_kwargs = step_options(sched)
    if "generator" in inspect.signature(sched.step).parameters:
        # stochastic samplers (IF's DDPM) draw each row's step noise from the row's generator,
        # after its starting noise: the images equal the pipeline's own __call__ with them
        step_kwargs["generator"] = generators
    if stop is not None and not 1 <= stop <= steps:
        raise ValueError(f"stop={stop}: give a step in 1..{steps} (the number of steps run).")
    set_timesteps(model, sched, steps, x)
    for i, t in enumerate(sched.timesteps):
        inp = torch.cat([x, x]) if use_cfg else x
        if hasattr(sched, "scale_model_input"):  # flow-matching samplers have no scaling
            inp = sched.scale_model_input(inp, t)
        out = forward(net, inp, t, inputs.context, inputs.added, inputs.mask)
        variance = None
        if out.shape[1] != x.shape[1]:  # IF and PixArt predict a learned variance after the noise
            out, variance = out.split(x.shape[1], dim=1)
        if use_cfg:
            out_u, out_c = out.chunk(2)
            out = out_u + guidance * (out_c - out_u)
            variance = None if variance is None else variance.chunk(2)[1]
        if variance is not None and reads_variance(sched):
            out = torch.cat([out, variance], dim=1)  # else the sampler's own variance is used
        sigma = sched.sigmas[i] if hasattr(sched, "sigmas") else None  # before step moves on
        result = sched.step(out, t, x, **step_kwargs)
        if stop is not None and i + 1 == stop < len(sched.timesteps):
            x = predicted_clean(sched, result, x, out, sigma)
            break
        x = result.prev_sample
    x = kind.unpack(x, pipe)
    if fam.space == "latent":
        vae = pipe.vae
        x = x.to(vae.dtype) / vae.config.scaling_factor + (vae.config.get("shift_factor") or 0)
        x = vae.decode(x).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def clean_latents(model: LocoModel, images: Tensor) -> Tensor:
    """What the denoiser denoises for ``images`` in [0, 1] (the inverse of :func:`denoise`'s
    decoding): pixels in [-1, 1], or the autoencoder's mean latents shifted and scaled as the
    pipeline decodes them; (B, C, H, W), before the denoiser's own packing (FLUX)."""
    x = images * 2 - 1
    if model.family.space != "latent":
        return x.to(model.denoiser.dtype)
    vae = model.pipeline.vae
    mean = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean
    shift = vae.config.get("shift_factor") or 0
    return ((mean - shift) * vae.config.scaling_factor).to(model.denoiser.dtype)


def noised(model: LocoModel, x0: Tensor, noise: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(x_t, timesteps, target) of the model's own training objective, at noise levels ``u`` in
    [0, 1) (one per row): DDPM noising with the sampler's training schedule (target the noise, or
    v for v-prediction), or flow matching's x_t = (1 - σ) x0 + σ ε at timestep 1000 σ (target
    ε - x0). A loss on these trains what the sampler reads."""
    sched = model.pipeline.scheduler
    if predicts_flow(sched):
        sigma = u.to(x0).view(-1, *[1] * (x0.dim() - 1))
        steps = sched.config.get("num_train_timesteps", 1000)
        return (1 - sigma) * x0 + sigma * noise, u.to(x0) * steps, noise - x0
    ddpm = diffusers.DDPMScheduler.from_config(sched.config)
    t = (u * ddpm.config.num_train_timesteps).long().to(x0.device)
    x_t = ddpm.add_noise(x0, noise, t)
    if ddpm.config.prediction_type == "v_prediction":
        return x_t, t, ddpm.get_velocity(x0, noise, t)
    return x_t, t, noise
