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
from loco_lightning.models.sampling import denoise, initial_noise, make_scheduler

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
    net, forward = model.denoiser, kind_of(model.denoiser).forward
    repeated = sources.rows(torch.arange(n).repeat(r))  # seed-major: row j is seed j // n
    calls: list[tuple[Tensor, Tensor]] = []

    def grab(module, args, kwargs):
        calls.append((kwargs["hidden_states"], kwargs["timestep"]))

    with intervene(net, [Record(indices, ("context",))], cfg=model.cfg) as trace:
        handle = net.register_forward_pre_hook(grab, with_kwargs=True)  # after sites' tracing
        try:
            denoise(model, repeated, [s for s in seeds for _ in range(n)])
        finally:
            handle.remove()
    m = n * r
    own = {i: torch.stack(trace.records[(i, "context")]) for i in indices}  # (S, [2]M, T, d)
    steps = len(calls)
    beside = targets.rows(torch.arange(n).repeat(r))
    if preserve is not None:
        beside = beside.cat(preserve)
    records: dict[int, list[Tensor]] = {i: [] for i in indices}
    with intervene(net, [Record(indices, ("context",))], cfg=False) as trace:
        for x, t in calls:
            x, t = x[-m:], t.reshape(-1).expand(x.shape[0])[-m:]  # the sources' rows
            rows = torch.arange(beside.context.shape[0], device=x.device) % m
            pooled = dict(repeated.added or {})
            if pooled:  # the sources' own pooled input, as a window swap keeps it
                beside = Conditioning(
                    beside.context, {k: v[rows] for k, v in pooled.items()}, beside.mask
                )
            forward(net, x[rows], t[rows], beside.context, beside.added, beside.mask)
    for i in indices:
        records[i] = torch.stack(trace.records[(i, "context")])  # (S, M + P, T, d)
    out = {}
    for i in indices:
        cond = own[i][:, -m:]
        empty = own[i][:, :m] if model.cfg else None
        side = records[i]
        shape = (steps, r, n, *cond.shape[2:])
        kept = side[:, m:] if preserve is not None else None
        if empty is None:  # no guidance: the empty prompt on the same latents, once
            empty = _empty_stream(model, indices, calls, m)[i]
        out[i] = (cond.reshape(shape), side[:, :m].reshape(shape), kept, empty.mean((0, 1)))
    return out


def _empty_stream(model: LocoModel, indices, calls, m: int) -> dict[int, Tensor]:
    net, forward = model.denoiser, kind_of(model.denoiser).forward
    empty = model.empty().expand(m)
    with intervene(net, [Record(indices, ("context",))], cfg=False) as trace:
        for x, t in calls:
            forward(net, x[-m:], t.reshape(-1).expand(x.shape[0])[-m:], *empty)
    return {i: torch.stack(trace.records[(i, "context")]) for i in indices}


@torch.no_grad()
def first_step_streams(model: LocoModel, cond: Conditioning) -> dict[int, Tensor]:
    """Per site, the text-stream inputs (N, T, d) of ``cond`` at the first denoising call from
    seed 0's noise: a fixed point to compare a joint-attention model's keys and values at."""
    net = model.denoiser
    sched = make_scheduler(model)
    sched.set_timesteps(model.steps, device=model.device)
    n = cond.context.shape[0]
    x = initial_noise(model, [0] * n) * getattr(sched, "init_noise_sigma", 1.0)
    indices = tuple(s.index for s in sites(net))
    with intervene(net, [Record(indices, ("context",))], cfg=False) as trace:
        kind_of(net).forward(net, x, sched.timesteps[:1], *cond)
    return {i: trace.records[(i, "context")][0] for i in indices}
