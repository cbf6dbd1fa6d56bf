"""The attention processor installed on every intervened site.

It reproduces diffusers' ``AttnProcessor2_0`` (``attn2`` sites; SANA's ``SanaAttnProcessor2_0``,
whose query/key norms span all heads, where those norms are that wide) and
``AttnAddedKVProcessor2_0`` (IF's added-KV sites) and opens three seams between their steps:
which context each sample reads, the text keys/values (ablate, record, reuse across timesteps),
and the output (record).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb
from torch import Tensor, nn

from loco_lightning.hooks.interventions import NeuronAblation
from loco_lightning.hooks.sites import CrossAttnSite


@dataclass
class Trace:
    """What a run of the executor produced: recorded activations, keyed by (site index, what).

    Each entry holds one tensor per UNet call, in call order.
    """

    records: dict[tuple[int, str], list[Tensor]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class RunState:
    """State shared by the processors of one executor run.

    ``generation`` changes whenever the UNet is called with a different context tensor; cached
    keys/values are valid only within one generation.
    """

    cfg: bool
    cache_kv: bool
    bank: Tensor | None = None  # (N, T, D_site): the swapped-in contexts, as the sites see them
    bank_mask: Tensor | None = None  # (N, T): their padding masks (1: a token), where masked
    generation: int = 0
    # joint attention: the rows the caller gave (companion rows follow them), and the companion
    # row of each (row, bank index) swap
    batch: int | None = None
    companion: dict[tuple[int, int], int] = field(default_factory=dict)
    text_length: int | None = None  # fused sequences (FLUX's single blocks): text tokens first
    trace: Trace = field(default_factory=Trace)


def rows(n_total: int, samples: tuple[int, ...] | None, uncond: bool, cfg: bool) -> list[int]:
    """Batch rows that a spec with these ``samples`` reaches in a batch of ``n_total``."""
    n_cond = n_total // 2 if cfg else n_total
    offset = n_total - n_cond
    chosen = range(n_cond) if samples is None else samples
    bad = [s for s in chosen if not 0 <= s < n_cond]
    if bad:
        raise IndexError(
            f"Intervention samples {bad} out of range: the batch has {n_cond} conditional samples "
            f"({n_total} rows, cfg={cfg}). Give indices in [0, {n_cond})."
        )
    out = [offset + s for s in chosen]
    if uncond and cfg:
        out += list(chosen)
    return out


class SiteProcessor:
    """Attention processor for one site; configured by the executor, stateless across runs.

    Args:
        site: the site it serves.
        state: shared run state (context bank, cfg layout, cache switch, trace).
        swaps: ``(bank index, samples, uncond)`` per prompt swap at this site.
        ablations: neuron ablations at this site.
        record: activations to record here.
        tokens: per conditional sample, the text positions whose ``contribution`` is recorded.
    """

    def __init__(
        self,
        site: CrossAttnSite,
        state: RunState,
        swaps: list[tuple[int, tuple[int, ...] | None, bool]],
        ablations: list[NeuronAblation],
        record: set[str],
        tokens: tuple[tuple[int, ...], ...] | None = None,
    ) -> None:
        self.site = site
        self.tokens = tokens
        self.state = state
        self.swaps = swaps
        self.ablations = ablations
        self.record = record
        self._kv_cache: tuple[int, int, Tensor, Tensor] | None = None
        self._src_cache: dict[int, Tensor] = {}

    def _source(self, n_total: int, device: torch.device) -> Tensor:
        """(B,) index into the bank per batch row, -1 where the row keeps its own context."""
        if n_total not in self._src_cache:
            src = [-1] * n_total  # a list: element-wise tensor writes cost 5 us each
            for bank_index, samples, uncond in self.swaps:
                for r in rows(n_total, samples, uncond, self.state.cfg):
                    if src[r] >= 0:
                        raise ValueError(
                            f"Two prompt swaps reach batch row {r} at site {self.site.index} "
                            f"({self.site.path}); give each sample one swap per site."
                        )
                    src[r] = bank_index
            self._src_cache[n_total] = torch.tensor(src, dtype=torch.long, device=device)
        return self._src_cache[n_total]

    def _companions(self, n_total: int, device: torch.device) -> Tensor:
        """(B,) row whose text stream each row reads: its companion where swapped, else itself
        (the caller's rows come first, their companions after them)."""
        key = ("joint", n_total)
        if key not in self._src_cache:
            bank = self._source(self.state.batch, torch.device("cpu")).tolist()
            src = torch.arange(n_total)
            for r, b in enumerate(bank):
                if b >= 0:
                    src[r] = self.state.companion[(r, b)]
            self._src_cache[key] = src.to(device)
        return self._src_cache[key]

    def context(self, context: Tensor) -> Tensor:
        """Per-row text context: the swapped prompt's where a swap applies, else the row's own
        (joint attention: the text stream of the row's companion, at this block)."""
        if not self.swaps:
            return context
        if self.site.kind in ("joint", "fused"):
            return context[self._companions(context.shape[0], context.device)]
        bank = self.state.bank
        if bank.shape[1:] != context.shape[1:]:
            raise ValueError(
                f"Swapped context has shape {tuple(bank.shape[1:])} but site {self.site.index} "
                f"({self.site.path}) receives {tuple(context.shape[1:])}; encode every prompt with "
                "the same tokenizer padding (max_length) as the UNet's own context."
            )
        src = self._source(context.shape[0], context.device)  # (B,)
        swapped = bank.to(context.dtype)[src.clamp(min=0)]  # (B, T, D)
        return torch.where((src >= 0)[:, None, None], swapped, context)

    def mask(self, attention_mask: Tensor | None) -> Tensor | None:
        """Per-row attention bias over the text tokens (B, 1, T), as a masked denoiser passes it:
        a swapped row reads its prompt's padding, not the row's own."""
        if not self.swaps or attention_mask is None or self.state.bank_mask is None:
            return attention_mask
        src = self._source(attention_mask.shape[0], attention_mask.device)
        bias = (1 - self.state.bank_mask.to(attention_mask.dtype)) * -10000.0  # as PixArt makes it
        swapped = bias[src.clamp(min=0)].unsqueeze(1)
        return torch.where((src >= 0)[:, None, None], swapped, attention_mask)

    def _contribution(self, attn, query: Tensor, key: Tensor, value: Tensor, mask) -> None:
        """Record what each conditional sample's ``tokens`` add to the attention output: the
        mean over image positions of ``‖to_out[0](Σ_{j ∈ tokens} A[:, :, j] v_j)‖`` (heads
        merged; the text keys come first, so for IF and joint attention the positions index
        the text part, and joint attention passes its image queries only; FLUX's single-stream
        blocks, which have no output projection of their own, measure the merged heads)."""
        scale = getattr(attn, "scale", query.shape[-1] ** -0.5)  # FluxAttention: SDPA's default
        scores = (query @ key.transpose(-1, -2)).float() * scale  # (B, h, Q, K)
        if mask is not None:
            scores = scores + mask.float()
        probs = scores.softmax(-1).to(value.dtype)
        cond = rows(self.state.batch or query.shape[0], None, False, self.state.cfg)
        if len(cond) != len(self.tokens):
            raise ValueError(
                f"Record(contribution) has tokens for {len(self.tokens)} samples, but the batch "
                f"has {len(cond)} conditional samples; give one tuple of positions per sample."
            )
        out = torch.empty(len(cond), device=query.device)
        for s, r in enumerate(cond):
            tok = torch.as_tensor(self.tokens[s], device=query.device)
            o = probs[r][:, :, tok] @ value[r][:, tok, :]  # (h, Q, d)
            o = o.transpose(0, 1).reshape(o.shape[1], -1)  # (Q, inner)
            if hasattr(attn, "to_out"):  # FLUX's single-stream blocks have none of their own
                o = attn.to_out[0](o)
            out[s] = o.float().norm(dim=-1).mean()
        self.state.trace.records[(self.site.index, "contribution")].append(out.detach())

    def _ablate(self, kv: Tensor, which: str) -> Tensor:
        for ab in self.ablations:
            if which not in ab.projection:
                continue
            idx = torch.as_tensor(ab.neurons, device=kv.device)
            if int(idx.max()) >= kv.shape[-1]:
                raise IndexError(
                    f"Neuron {int(idx.max())} out of range at site {self.site.index} "
                    f"({self.site.path}): {which} has {kv.shape[-1]} output neurons."
                )
            row = torch.zeros(kv.shape[0], dtype=torch.bool, device=kv.device)
            row[rows(self.state.batch or kv.shape[0], ab.samples, ab.uncond, self.state.cfg)] = True
            old = kv[..., idx]  # (B, T, n)
            if ab.scale is not None:
                new = old * ab.scale
            else:
                new = torch.as_tensor(ab.value, dtype=kv.dtype, device=kv.device).expand_as(old)
            kv = kv.clone()
            kv[..., idx] = torch.where(row[:, None, None], new, old)
        return kv

    def keys_values(self, attn: nn.Module, context: Tensor) -> tuple[Tensor, Tensor]:
        """Text keys and values (B, T, inner) after swaps and ablations, cached if allowed."""
        cache = self._kv_cache
        cacheable = self.state.cache_kv and self.site.kind == "attn2"  # the others: per call
        if (
            cacheable
            and cache is not None
            and cache[0] == self.state.generation
            and cache[1] == context.shape[0]
        ):
            return cache[2], cache[3]
        ctx = self.context(context)
        given = slice(self.state.batch)  # the caller's rows, without companions
        if "context" in self.record:
            self.state.trace.records[(self.site.index, "context")].append(ctx[given].detach())
        if getattr(attn, "norm_cross", None):  # FluxAttention has none
            ctx = attn.norm_encoder_hidden_states(ctx)
        key = self._ablate(getattr(attn, self.site.key_name)(ctx), "k")
        value = self._ablate(getattr(attn, self.site.value_name)(ctx), "v")
        for name, t in (("k", key), ("v", value)):
            if name in self.record:
                self.state.trace.records[(self.site.index, name)].append(t[given].detach())
        if cacheable:
            self._kv_cache = (self.state.generation, context.shape[0], key, value)
        return key, value

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        # FluxAttention passes its rotary embedding fifth, where diffusers' Attention has temb
        rope = kwargs.get(
            "image_rotary_emb", temb if self.site.kind in ("joint", "fused") else None
        )
        if self.site.kind == "fused":
            out = self._fused(attn, hidden_states, rope)
        elif encoder_hidden_states is None:
            raise ValueError(
                f"Site {self.site.index} ({self.site.path}) was called without a text context; "
                "pass encoder_hidden_states to the UNet."
            )
        elif self.site.kind == "attn2":
            out = self._attn2(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        elif self.site.kind == "joint":
            out = self._joint(attn, hidden_states, encoder_hidden_states, rope)
        else:
            out = self._added_kv(attn, hidden_states, encoder_hidden_states, attention_mask)
        if "output" in self.record:
            image = out[0] if isinstance(out, tuple) else out
            self.state.trace.records[(self.site.index, "output")].append(
                image[: self.state.batch].detach()
            )
        return out

    def _attn2(self, attn, hidden_states, context, attention_mask, temb) -> Tensor:
        # Mirrors diffusers' AttnProcessor2_0 step by step.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, sequence_length, _ = context.shape
        attention_mask = self.mask(attention_mask)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        key, value = self.keys_values(attn, context)
        head_dim = key.shape[-1] // attn.heads
        # a norm as wide as all heads runs before the split (SANA's processor), one per head after
        across = _width(attn.norm_k) == key.shape[-1]
        if across:
            query, key = _norm(attn.norm_q, query), _norm(attn.norm_k, key)
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if not across:
            query, key = _norm(attn.norm_q, query), _norm(attn.norm_k, key)
        if "contribution" in self.record:
            self._contribution(attn, query, key, value, attention_mask)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(query.dtype)))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _added_kv(self, attn, hidden_states, context, attention_mask) -> Tensor:
        # Mirrors diffusers' AttnAddedKVProcessor2_0: text K/V (with bias) before the image K/V.
        residual = hidden_states
        hidden_states = hidden_states.view(hidden_states.shape[0], hidden_states.shape[1], -1)
        hidden_states = hidden_states.transpose(1, 2)  # (B, HW, C)
        batch, sequence_length, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(
            attention_mask, sequence_length, batch, out_dim=4
        )
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states), out_dim=4)
        key, value = self.keys_values(attn, context)
        key = attn.head_to_batch_dim(key, out_dim=4)
        value = attn.head_to_batch_dim(value, out_dim=4)
        if not attn.only_cross_attention:
            key = torch.cat([key, attn.head_to_batch_dim(attn.to_k(hidden_states), out_dim=4)], 2)
            value = torch.cat(
                [value, attn.head_to_batch_dim(attn.to_v(hidden_states), out_dim=4)], 2
            )
        if "contribution" in self.record:
            self._contribution(attn, query, key, value, attention_mask)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, residual.shape[1])
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        return hidden_states.transpose(-1, -2).reshape(residual.shape) + residual

    def _joint(self, attn, hidden_states, context, rope=None) -> tuple[Tensor, Tensor]:
        # Mirrors diffusers' JointAttnProcessor2_0 (SD3: image tokens first) and FluxAttnProcessor
        # (FLUX: text first, rotary embeddings): image and text queries, keys and values
        # attended together; the text stream's keys and values go through the seams.
        batch, n_image = hidden_states.shape[:2]
        heads = _heads(attn, batch)
        query, key, value = (heads(p(hidden_states)) for p in (attn.to_q, attn.to_k, attn.to_v))
        query, key = _norm(attn.norm_q, query), _norm(attn.norm_k, key)
        text_key, text_value = (heads(t) for t in self.keys_values(attn, context))
        text_query = _norm(attn.norm_added_q, heads(attn.add_q_proj(context)))
        text_key = _norm(attn.norm_added_k, text_key)
        text_first = rope is not None
        parts = [(text_query, query), (text_key, key), (text_value, value)]
        query, key, value = (torch.cat(p if text_first else p[::-1], 2) for p in parts)
        if rope is not None:
            query, key = _rotate(query, rope), _rotate(key, rope)
        n_text = context.shape[1]
        image_at = slice(n_text, None) if text_first else slice(0, n_image)
        if "contribution" in self.record:  # the image queries; text keys first, as for IF
            text_at = slice(0, n_text) if text_first else slice(n_image, None)
            keys = torch.cat([key[:, :, text_at], key[:, :, image_at]], 2)
            values = torch.cat([value[:, :, text_at], value[:, :, image_at]], 2)
            self._contribution(attn, query[:, :, image_at], keys, values, None)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3]).to(query.dtype)
        image = out[:, image_at]
        text = out[:, :n_text] if text_first else out[:, n_image:]
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        return attn.to_out[1](attn.to_out[0](image)), text

    def _fused(self, attn, hidden_states, rope) -> Tensor:
        # Mirrors FluxAttnProcessor on a single-stream block: one sequence, text tokens first,
        # through the same projections; the text tokens' keys and values go through the seams.
        batch, n_text = hidden_states.shape[0], self.state.text_length
        heads = _heads(attn, batch)
        text, image = hidden_states[:, :n_text], hidden_states[:, n_text:]
        text_key, text_value = self.keys_values(attn, text)
        key = torch.cat([text_key, attn.to_k(image)], 1)
        value = torch.cat([text_value, attn.to_v(image)], 1)
        query = _norm(attn.norm_q, heads(attn.to_q(hidden_states)))
        key, value = _norm(attn.norm_k, heads(key)), heads(value)
        if rope is not None:
            query, key = _rotate(query, rope), _rotate(key, rope)
        if "contribution" in self.record:
            self._contribution(attn, query[:, :, n_text:], key, value, None)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        return out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3]).to(query.dtype)


def _norm(norm: nn.Module | None, x: Tensor) -> Tensor:
    return x if norm is None else norm(x)


def _width(norm: nn.Module | None) -> int | None:
    """The feature width a query/key norm normalises (None without one, or if it does not say)."""
    shape = getattr(norm, "normalized_shape", None) or getattr(norm, "dim", None)
    return None if shape is None else int(shape[-1])


def _heads(attn: nn.Module, batch: int):
    def split(x: Tensor) -> Tensor:  # (B, L, inner) -> (B, heads, L, head_dim)
        return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

    return split


def _rotate(x: Tensor, rope) -> Tensor:
    return apply_rotary_emb(x, rope)  # (B, heads, L, head_dim)
