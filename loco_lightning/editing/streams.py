"""What joint-attention blocks read: the text stream along sampling trajectories.

In joint attention (SD3) the text a block's ``add_k_proj``/``add_v_proj`` read is the caption as
every earlier block updated it beside the image, so no function of the prompt alone gives it.
A key/value edit there regresses the stream as the unedited model samples it instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from loco_lightning.hooks import Record, intervene, sites
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.models import LocoModel
from loco_lightning.models.pipeline import Conditioning
from loco_lightning.models.sampling import denoise, initial_noise, make_scheduler, set_timesteps

STREAM_SEEDS = (0, 1)  # the trajectories a joint-attention edit reads its rows from


@torch.no_grad()
def stream_inputs(
    model: LocoModel,
    indices: tuple[int, ...],
    sources: Conditioning,
    targets: Conditioning,
    preserve: Conditioning | None,
    seeds: tuple[int, ...] = STREAM_SEEDS,
) -> dict[int, tuple[Tensor, Tensor, Tensor | None, Tensor]]:
    """Per site: the text-stream inputs of the sources, the targets and preserve prompts, and the
    empty prompt, as they reach that block on the images the sources are sampled into.

    Every source is generated once per seed (guidance as the model samples). At each step, each
    block of ``indices`` records what its text keys and values read for: the source (its own
    generation); its target on the same latents, timestep and pooled input (what a LocoGen
    window swap puts there: the target's stream on this very image); each preserve prompt on
    one of those latents in turn; and the empty prompt, as guidance's unconditional rows read it.
    All are read off the unedited model, for every block at once.

    Returns:
        Per site: sources (S, R, N, T, d) and targets alike (S steps, R seeds, N sources),
        preserve (S, P, T, d) or None, and the empty prompt's stream averaged over steps and
        images (T, d).
    """
    n, r = sources.context.shape[0], len(seeds)
    net = model.denoiser
    repeated = sources.rows(torch.arange(n).repeat(r))  # seed-major: row j is seed j // n
    calls: list[dict] = []  # every denoiser call of the runs, as the denoiser took it

    def grab(module, args, kwargs):
        calls.append(dict(kwargs))

    with intervene(net, [Record(indices, ("context",))], cfg=model.cfg) as trace:
        handle = net.register_forward_pre_hook(grab, with_kwargs=True)  # after sites' tracing
        try:
            denoise(model, repeated, [s for s in seeds for _ in range(n)])
        finally:
            handle.remove()
    m = n * r
    own = {i: torch.stack(trace.records[(i, "context")]) for i in indices}  # (S, [2]M, T, d)
    beside = targets.rows(torch.arange(n).repeat(r))
    if preserve is not None:
        beside = beside.cat(preserve)
    at = torch.arange(beside.context.shape[0]) % m  # the source row whose latents each reads
    # the sources' own pooled input, as a window swap keeps it
    beside = beside._replace(added=repeated.rows(at).added)
    side = _streams(net, indices, calls, m, at, beside)  # (S, M + P, T, d)
    empty = None
    if not model.cfg:  # no unconditional rows: the empty prompt on the same latents
        blank = model.empty()
        empty = _streams(
            net, indices, calls, m, torch.arange(m), blank.rows(torch.zeros(m, dtype=torch.long))
        )
    out = {}
    for i in indices:
        cond = own[i][:, -m:]
        shape = (len(calls), r, n, *cond.shape[2:])
        kept = side[i][:, m:] if preserve is not None else None
        blank = own[i][:, :m] if empty is None else empty[i]
        out[i] = (cond.reshape(shape), side[i][:, :m].reshape(shape), kept, blank.mean((0, 1)))
    return out


# the inputs of a denoiser call that have a row per sample
BATCHED = ("hidden_states", "timestep", "guidance", "pooled_projections")


def _streams(net, indices, calls: list[dict], m: int, at: Tensor, cond: Conditioning):
    """Per site, the text-stream inputs (S, len(at), T, d) of ``cond`` when each row is denoised
    on the latents of source row ``at`` at every recorded call (the other inputs as there)."""
    with intervene(net, [Record(indices, ("context",))], cfg=False) as trace:
        for call in calls:
            kwargs = dict(call)
            total = call["hidden_states"].shape[0]
            for k in BATCHED:  # the sources' rows are the last m
                v = kwargs.get(k)
                if isinstance(v, Tensor) and v.ndim and v.shape[0] == total:
                    kwargs[k] = v[-m:][at.to(v.device)]
            kwargs["encoder_hidden_states"] = cond.context
            kwargs.update(cond.added or {})
            if cond.mask is not None:
                kwargs["encoder_attention_mask"] = cond.mask
            net(**kwargs)
    return {i: torch.stack(trace.records[(i, "context")]) for i in indices}


@torch.no_grad()
def first_step_streams(model: LocoModel, cond: Conditioning) -> dict[int, Tensor]:
    """Per site, the text-stream inputs (N, T, d) of ``cond`` at the first denoising call from
    seed 0's noise: a fixed point to compare a joint-attention model's keys and values at."""
    net, kind = model.denoiser, kind_of(model.denoiser)
    sched = make_scheduler(model)
    n = cond.context.shape[0]
    x = kind.pack(initial_noise(model, [0] * n) * getattr(sched, "init_noise_sigma", 1.0))
    set_timesteps(sched, model.steps, x, model.device)
    if model.family.guidance_embedded:
        scale = torch.full((n,), float(model.guidance), device=model.device)
        cond = cond._replace(added={**(cond.added or {}), "guidance": scale})
    indices = tuple(s.index for s in sites(net))
    with intervene(net, [Record(indices, ("context",))], cfg=False) as trace:
        kind.forward(net, x, sched.timesteps[:1], *cond)
    return {i: trace.records[(i, "context")][0] for i in indices}


@torch.no_grad()
def run_activations(
    model: LocoModel, index: int, prompts: list[str], projection: str, seeds=STREAM_SEEDS[:1]
) -> Tensor:
    """(rows, inner) text keys (``k``) or values (``v``) at site ``index`` along each prompt's
    own sampling runs (every step and token position, conditional rows only): what a
    joint-attention site's neurons do for these prompts."""
    n = len(prompts)
    cond = model.encode(prompts).rows(torch.arange(n).repeat(len(seeds)))
    with intervene(model.denoiser, [Record((index,), (projection,))], cfg=model.cfg) as trace:
        denoise(model, cond, [s for s in seeds for _ in range(n)])
    calls = trace.records[(index, projection)]
    return torch.cat([c[-cond.context.shape[0] :].flatten(0, 1) for c in calls])
