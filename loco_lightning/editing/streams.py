"""What joint-attention blocks read: the text stream along sampling trajectories.

In joint attention (SD3) the text a block's ``add_k_proj``/``add_v_proj`` read is the caption as
every earlier block updated it beside the image, so no function of the prompt alone gives it.
A key/value edit there regresses the stream as the unedited model samples it instead.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from loco_lightning.hooks import Record, intervene, sites
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import weights_digest
from loco_lightning.models.pipeline import Conditioning
from loco_lightning.models.sampling import (
    denoise,
    initial_noise,
    make_scheduler,
    set_timesteps,
    told_guidance,
)

STREAM_SEEDS = (0, 1)  # the trajectories a joint-attention edit reads its rows from

Streams = dict[int, tuple[Tensor, Tensor, Tensor | None, Tensor]]


class _Shared:
    """The streams read in a :func:`shared_streams` block, per regression and site, with the
    seconds of the reading that gave each site, and the seconds reuses saved (an editor's time
    to edit adds them back)."""

    def __init__(self) -> None:
        self.read: dict[tuple, dict[int, tuple[tuple, float]]] = {}
        self.reused = 0.0


_SHARED: ContextVar[_Shared | None] = ContextVar("shared_streams", default=None)


@contextmanager
def shared_streams() -> Iterator[None]:
    """Inside the block, key/value edits that regress the same prompts on the same weights
    (LocoEdit at the located window, on every site, on a random window) read each site's text
    stream once: an edit whose sites were all read takes them, one with sites not yet read
    reads those alone (so memory stays what the largest edit needs: on SD3 every site's rows of
    every step are gigabytes). Edits are the same bit for bit; :func:`reused_seconds` lets the
    timer charge an edit the reading it reused, so a time to edit stays what it costs alone."""
    token = _SHARED.set(_Shared())
    try:
        yield
    finally:
        _SHARED.reset(token)


def reused_seconds() -> float:
    """Seconds of stream reading reused so far in this :func:`shared_streams` block (0
    outside one)."""
    shared = _SHARED.get()
    return 0.0 if shared is None else shared.reused


@torch.no_grad()
def stream_inputs(
    model: LocoModel,
    indices: tuple[int, ...],
    sources: Conditioning,
    targets: Conditioning,
    positions: tuple[tuple[tuple[int, int], ...], ...],
    preserve: Conditioning | None = None,
    preserve_at: tuple[tuple[int, ...], ...] | None = None,
    seeds: tuple[int, ...] = STREAM_SEEDS,
) -> Streams:
    """Per site: the regression rows of a key/value edit, read off the text stream that reaches
    the block on the images the sources are sampled into.

    Every source is generated once per seed (guidance as the model samples). At each step, each
    block of ``indices`` gives what its text keys and values read for: the source at its
    ``positions`` (its own generation); its target at the paired positions on the same latents,
    timestep and pooled input (what a LocoGen window swap puts there: the target's stream on
    this very image); each preserve prompt on one of those latents in turn, at ``preserve_at``
    (every position if None); and the empty prompt, as guidance's unconditional rows read it
    (on the same latents where there are none). Only those rows are kept, so memory does not
    grow with the context's length. All are read off the unedited model, for every block at once;
    inside a :func:`shared_streams` block a site already read for the same rows is not read again.

    Returns:
        Per site: source rows and target rows (one per position, step and seed), preserve rows
        or None, and the empty prompt's stream averaged over steps and images (T, d).
    """
    args = (sources, targets, positions, preserve, preserve_at, seeds)
    shared = _SHARED.get()
    if shared is None:
        return _read_streams(model, indices, *args)
    h = hashlib.sha1(weights_digest(model.denoiser).encode())
    for cond in (sources, targets, preserve):
        for t in () if cond is None else (cond.context, *(cond.added or {}).values()):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    key = (id(model.denoiser), h.hexdigest(), positions, preserve is None, preserve_at, seeds)
    read = shared.read.setdefault(key, {})
    missing = tuple(i for i in indices if i not in read)
    if missing:  # a sampling run either way: read what is missing
        start = time.perf_counter()
        streams = _read_streams(model, missing, *args)
        seconds = time.perf_counter() - start
        read.update({i: (streams[i], seconds) for i in missing})
    else:
        shared.reused += max(read[i][1] for i in indices)
    return {i: read[i][0] for i in indices}


def _read_streams(
    model: LocoModel,
    indices: tuple[int, ...],
    sources: Conditioning,
    targets: Conditioning,
    positions: tuple[tuple[tuple[int, int], ...], ...],
    preserve: Conditioning | None,
    preserve_at: tuple[tuple[int, ...], ...] | None,
    seeds: tuple[int, ...],
) -> Streams:
    """The reading :func:`stream_inputs` describes: the sources' sampling runs, then the rows
    beside them on the same latents."""
    n, r = sources.context.shape[0], len(seeds)
    m = n * r  # seed-major: row j is source j % n under seed j // n
    net, found = model.denoiser, sites(model.denoiser)
    pairs = [(j, a, b) for j in range(m) for a, b in positions[j % n]]
    at_row, at_src, at_tgt = (torch.tensor(c) for c in zip(*pairs))
    x_rows: dict[int, list[Tensor]] = {i: [] for i in indices}
    y_rows: dict[int, list[Tensor]] = {i: [] for i in indices}
    kept: dict[int, list[Tensor]] = {i: [] for i in indices}
    empty = {i: torch.zeros((), dtype=torch.float64) for i in indices}  # summed over calls
    calls: list[dict] = []  # every denoiser call of the runs, as the denoiser took it
    n_p = 0 if preserve is None else preserve.context.shape[0]
    p_at = (  # the preserve rows' (prompt, position) pairs; every position if None
        slice(None)
        if preserve_at is None
        else (
            [k for k, at in enumerate(preserve_at) for _ in at],
            [a for at in preserve_at for a in at],
        )
    )

    def generation(i: int, x: Tensor) -> None:
        x_rows[i].append(x[-m:][at_row, at_src])
        if model.cfg:
            empty[i] = empty[i] + x[:m].double().sum(0)

    def beside_rows(i: int, x: Tensor) -> None:
        y_rows[i].append(x[:m][at_row, at_tgt])
        if n_p:
            kept[i].append(x[m : m + n_p][p_at].flatten(0, -2))
        if not model.cfg:
            empty[i] = empty[i] + x[m + n_p :].double().sum(0)

    repeated = sources.rows(torch.arange(n).repeat(r))
    handle = net.register_forward_pre_hook(
        lambda mod, a, kw: calls.append(dict(kw)), with_kwargs=True
    )
    try:
        with _reading(net, found, indices, generation):
            denoise(model, repeated, [s for s in seeds for _ in range(n)])
    finally:
        handle.remove()
    beside = targets.rows(torch.arange(n).repeat(r))
    if preserve is not None:
        beside = beside.cat(preserve)
    if not model.cfg:  # no unconditional rows: the empty prompt on the same latents
        beside = beside.cat(model.empty().expand(m))
    at = torch.arange(beside.context.shape[0]) % m  # the source row whose latents each reads
    # the sources' own pooled input, as a window swap keeps it (the empty prompt: its own)
    added = repeated.rows(at).added
    if added and not model.cfg:
        own = model.empty().added
        added = {
            k: torch.cat([v[: m + n_p], own[k].expand(m, *v.shape[1:])]) for k, v in added.items()
        }
    beside = beside._replace(added=added)
    with _reading(net, found, indices, beside_rows):
        for call in calls:
            net(**_on_latents(call, m, at, beside))
    return {
        i: (
            torch.cat(x_rows[i]),
            torch.cat(y_rows[i]),
            torch.cat(kept[i]) if n_p else None,
            (empty[i] / (len(calls) * m)).to(x_rows[i][0].dtype),  # m empty rows per call
        )
        for i in indices
    }


@contextmanager
def _reading(net, found, indices, take):
    """Hand ``take(site, x)`` what each site's key projection reads, on every call."""
    handles = [
        getattr(net.get_submodule(found[i].path), found[i].key_name).register_forward_pre_hook(
            lambda module, args, i=i: take(i, args[0])
        )
        for i in indices
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# the inputs of a denoiser call that have a row per sample
BATCHED = ("hidden_states", "timestep", "guidance", "pooled_projections")


def _on_latents(call: dict, m: int, at: Tensor, cond: Conditioning) -> dict:
    """A recorded call's inputs with ``cond``'s rows, each on the latents of source row ``at``
    (the sources' rows are the call's last ``m``)."""
    kwargs = dict(call)
    total = call["hidden_states"].shape[0]
    for k in BATCHED:
        v = kwargs.get(k)
        if isinstance(v, Tensor) and v.ndim and v.shape[0] == total:
            kwargs[k] = v[-m:][at.to(v.device)]
    kwargs["encoder_hidden_states"] = cond.context
    kwargs.update(cond.added or {})
    if cond.mask is not None:
        kwargs["encoder_attention_mask"] = cond.mask
    return kwargs


@torch.no_grad()
def first_step_streams(model: LocoModel, cond: Conditioning) -> dict[int, Tensor]:
    """Per site, the text-stream inputs (N, T, d) of ``cond`` at the first denoising call from
    seed 0's noise: a fixed point to compare a joint-attention model's keys and values at."""
    net, kind = model.denoiser, kind_of(model.denoiser)
    sched = make_scheduler(model)
    n = cond.context.shape[0]
    x = kind.pack(initial_noise(model, [0] * n) * getattr(sched, "init_noise_sigma", 1.0))
    set_timesteps(model, sched, model.steps, x)
    cond = told_guidance(model, cond, model.guidance)
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
