"""The one executor: installs intervention specs on a denoiser (a UNet or a diffusion
transformer) for the body of a ``with`` block."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.hooks.interventions import Intervention, NeuronAblation, PromptSwap, Record
from loco_lightning.hooks.processors import RunState, SiteProcessor, Trace, rows
from loco_lightning.hooks.sites import CrossAttnSite, site_module, sites

Encoder = Callable[[list[str]], tuple]
"""Maps prompts to ``(context (N, T, D), added_cond_kwargs or None[, padding mask (N, T)])`` as
the denoiser takes them (a LocoModel's ``encode``)."""


def check_sites(all_sites: Sequence[CrossAttnSite], indices: Sequence[int], what: str) -> None:
    """Raise a clear error for site indices the UNet does not have, or that repeat (an edit
    would then solve a site twice and keep the once-edited weights as its "original")."""
    repeated = sorted({i for i in indices if list(indices).count(i) > 1})
    if repeated:
        raise ValueError(
            f"{what} names site(s) {repeated} more than once in {list(indices)}; list each once."
        )
    bad = [i for i in indices if not 0 <= i < len(all_sites)]
    if bad:
        listing = "; ".join(f"{s.index}: {s.path}" for s in all_sites)
        raise IndexError(
            f"{what} names site(s) {bad}, but this UNet has {len(all_sites)} cross-attention sites "
            f"(0..{len(all_sites) - 1}): {listing}"
        )


def _encode_bank(unet, prompts: list[str], encode: Encoder | None) -> tuple:
    if encode is None:
        raise ValueError(
            f"Prompt swaps to {prompts!r} need an encoder: pass encode=... to intervene() "
            "(a LocoModel's encode does: intervene(model.denoiser, specs, encode=model.encode))."
        )
    context, added, *mask = encode(prompts)
    width = kind_of(unet).context_width(unet)
    if context.ndim != 3 or context.shape[-1] != width:
        raise ValueError(
            f"Encoder returned a context of shape {tuple(context.shape)}, but this model takes "
            f"(N, T, {width}); use the text encoder(s) that belong to it."
        )
    return context, added, mask[0] if mask else None


@contextmanager
def intervene(
    unet: nn.Module,
    interventions: Sequence[Intervention] = (),
    *,
    encode: Encoder | None = None,
    cfg: bool = True,
    cache_kv: bool = False,
) -> Iterator[Trace]:
    """Install interventions on ``unet`` for the body of the ``with`` block.

    Every cross-attention site gets a :class:`SiteProcessor` on its own attention module (not
    through ``set_attn_processor``, which walks the whole module tree twice at every call); the
    exact previous processors come back on exit, also when the body raises. Weights are never
    touched.

    Args:
        unet: a diffusers UNet with cross-attention.
        interventions: specs (``PromptSwap``, ``NeuronAblation``, ``Record``).
        encode: turns swap prompts into contexts (needed only for ``PromptSwap``).
        cfg: batches are ``[unconditional; conditional]`` halves, as diffusers pipelines build them.
        cache_kv: project each site's text keys/values once per context tensor instead of at every
            call; exact, because they do not depend on the timestep.

    Yields:
        A :class:`Trace` that fills with recorded activations.
    """
    all_sites = sites(unet)
    for spec in interventions:
        if not isinstance(spec, (PromptSwap, NeuronAblation, Record)):
            raise TypeError(f"Not an intervention spec: {spec!r}")
        check_sites(all_sites, spec.sites, type(spec).__name__)
    swaps = [s for s in interventions if isinstance(s, PromptSwap)]
    state = RunState(cfg=cfg, cache_kv=cache_kv)
    hooks = []
    prompts = list(dict.fromkeys(s.prompt for s in swaps))
    if prompts:
        raw, added, mask = _encode_bank(unet, prompts, encode)
        param = next(unet.parameters())
        raw = raw.to(param.device)
        added = {k: v.to(param.device) for k, v in (added or {}).items()}
        state.bank = kind_of(unet).text_states(unet, raw, added)
        state.bank_mask = None if mask is None else mask.to(param.device)
        indexed = [(prompts.index(s.prompt), s) for s in swaps]
        if any(s.kind in ("joint", "fused") for s in all_sites):
            hooks += _companion_hooks(unet, state, indexed, raw, added)
        elif any(s.pooled for s in swaps):
            hooks.append(
                _pooled_hook(unet, [(i, s) for i, s in indexed if s.pooled], raw, added, cfg)
            )
    hooks.append(unet.register_forward_pre_hook(_generation_counter(state), with_kwargs=True))

    processors = []
    for site in all_sites:
        records = [r for r in interventions if isinstance(r, Record) and site.index in r.sites]
        processor = SiteProcessor(
            site,
            state,
            swaps=[
                (prompts.index(s.prompt), s.samples, s.uncond)
                for s in swaps
                if site.index in s.sites
            ],
            ablations=[
                a for a in interventions if isinstance(a, NeuronAblation) and site.index in a.sites
            ],
            record={w for r in records for w in r.what},
            tokens=next((r.tokens for r in records if r.tokens), None),
        )
        processors.append(processor)
    modules = [site_module(unet, site) for site in all_sites]
    original = [m.processor for m in modules]
    for module, processor in zip(modules, processors):
        module.set_processor(processor)
    try:
        yield state.trace
    finally:
        for module, processor in zip(modules, original):
            module.set_processor(processor)
        for h in hooks:
            h.remove()


def _generation_counter(state: RunState):
    """UNet pre-hook that starts a new K/V-cache generation whenever the context tensor changes.

    A context is the same when it is the same tensor object at the same in-place version
    (inference-mode tensors keep no version, so for them identity alone decides).
    """
    seen: list = [
        None,
        None,
    ]  # the context tensor last seen (kept alive so ``is`` is safe), version

    def version(t):
        return None if t is None or t.is_inference() else t._version

    def hook(module, args, kwargs):
        ctx = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        if ctx is not None:
            state.text_length = ctx.shape[1]  # where a fused sequence's image tokens begin
        if ctx is not seen[0] or version(ctx) != seen[1]:
            state.generation += 1
            seen[0], seen[1] = ctx, version(ctx)

    return hook


def _companion_hooks(unet, state: RunState, swaps: list[tuple[int, PromptSwap]], raw, added):
    """Joint attention: a swapped row reads, at its window's blocks, the text stream of a
    *companion* row: the same latents, timestep and pooled input, with the swapped prompt's
    context; companions are appended to every call and cut from its output.

    So a window's text keys and values are what the swapped prompt's text stream holds at those
    blocks on this very image, computed side by side in the same batch; with ``pooled`` the row
    and its companion both take the prompt's ``pooled_projections``.
    """

    def pre(module, args, kwargs):
        kwargs = dict(kwargs)
        x = kwargs["hidden_states"]
        n = x.shape[0]
        pairs = list(
            dict.fromkeys((r, i) for i, s in swaps for r in rows(n, s.samples, s.uncond, state.cfg))
        )
        state.batch = n
        state.companion = {pair: n + j for j, pair in enumerate(pairs)}
        if not pairs:
            return args, kwargs
        at = torch.tensor([r for r, _ in pairs], device=x.device)
        bank = torch.tensor([i for _, i in pairs], device=x.device)
        pooled = kwargs["pooled_projections"].clone()
        for i, s in swaps:
            if s.pooled:
                pooled[rows(n, s.samples, s.uncond, state.cfg)] = added["pooled_projections"][i]
        from_bank = {i for i, s in swaps if s.pooled}
        companion_pooled = torch.stack(
            [added["pooled_projections"][i] if i in from_bank else pooled[r] for r, i in pairs]
        ).to(pooled.dtype)
        t = torch.as_tensor(kwargs["timestep"], device=x.device).reshape(-1).expand(n)
        if kwargs.get("guidance") is not None:  # FLUX.1-dev's scale, one per row
            kwargs["guidance"] = torch.cat([kwargs["guidance"], kwargs["guidance"][at]])
        kwargs["hidden_states"] = torch.cat([x, x[at]])
        kwargs["encoder_hidden_states"] = torch.cat(
            [kwargs["encoder_hidden_states"], raw[bank].to(x.dtype)]
        )
        kwargs["pooled_projections"] = torch.cat([pooled, companion_pooled])
        kwargs["timestep"] = torch.cat([t, t[at]])
        return args, kwargs

    def post(module, args, kwargs, output):
        n = state.batch
        if isinstance(output, tuple):
            return (output[0][:n], *output[1:])
        output.sample = output.sample[:n]
        return output

    return [
        unet.register_forward_pre_hook(pre, with_kwargs=True),
        unet.register_forward_hook(post, with_kwargs=True),
    ]


def _pooled_hook(unet, pooled: list[tuple[int, PromptSwap]], raw: Tensor, added: dict, cfg: bool):
    """Swap the prompt's global text path too: SD-XL ``text_embeds`` or IF's text-time embedding."""

    def swap(x: Tensor, bank: Tensor) -> Tensor:
        x = x.clone()
        for i, spec in pooled:
            x[rows(x.shape[0], spec.samples, spec.uncond, cfg)] = bank[i].to(x.dtype)
        return x

    kind = getattr(unet.config, "addition_embed_type", None)
    if kind == "text_time":

        def unet_hook(module, args, kwargs):
            cond = dict(kwargs["added_cond_kwargs"])
            cond["text_embeds"] = swap(cond["text_embeds"], added["text_embeds"])
            return args, {**kwargs, "added_cond_kwargs": cond}

        return unet.register_forward_pre_hook(unet_hook, with_kwargs=True)
    if kind == "text":
        return unet.add_embedding.register_forward_pre_hook(
            lambda module, args: (swap(args[0], raw), *args[1:])
        )
    raise ValueError(
        f"PromptSwap(pooled=True) asks to swap the global text path, but this "
        f"{type(unet).__name__} has none (the text enters only through its sites); drop "
        "pooled=True."
    )
