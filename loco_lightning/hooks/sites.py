"""Cross-attention sites: the places where text enters a denoiser (a UNet or a diffusion
transformer), named once, in execution order."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from loco_lightning.hooks.denoisers import kind_of

SiteKind = Literal["attn2", "added_kv", "joint", "fused"]

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[CrossAttnSite, ...]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class CrossAttnSite:
    """One cross-attention layer of a UNet.

    Attributes:
        index: position in execution order (mid block before up blocks), 0-based.
        path: module path inside the UNet,
            e.g. ``up_blocks.1.attentions.1.transformer_blocks.0.attn2``.
        kind: ``attn2`` (text K/V through ``to_k``/``to_v``), ``added_kv`` (DeepFloyd IF: text K/V
            through ``add_k_proj``/``add_v_proj`` with bias, concatenated to the image K/V) or
            ``joint`` (SD3: the text stream's own queries, keys and values through
            ``add_q_proj``/``add_k_proj``/``add_v_proj``, attended jointly with the image's) or
            ``fused`` (FLUX's single-stream blocks: one sequence of text then image tokens through
            the same ``to_q``/``to_k``/``to_v``; the text tokens' keys and values are the site's).
        context_dim: width of the text context this layer reads.
        inner_dim: width of its keys and values.
        heads: attention heads.
    """

    index: int
    path: str
    kind: SiteKind
    context_dim: int
    inner_dim: int
    heads: int

    @property
    def key_name(self) -> str:
        """Name of the key projection inside the attention module."""
        return "add_k_proj" if self.kind in ("added_kv", "joint") else "to_k"

    @property
    def value_name(self) -> str:
        """Name of the value projection inside the attention module."""
        return "add_v_proj" if self.kind in ("added_kv", "joint") else "to_v"

    def projection(self, which: Literal["k", "v"]) -> str:
        """Name of the key (``k``) or value (``v``) projection."""
        return self.key_name if which == "k" else self.value_name


def _kind(module: nn.Module) -> SiteKind | None:
    if getattr(module, "added_kv_proj_dim", None) is not None:
        return "joint" if hasattr(module, "add_q_proj") else "added_kv"
    if getattr(module, "is_cross_attention", False) and hasattr(module, "to_k"):
        return "attn2"
    if getattr(module, "pre_only", False) and hasattr(module, "to_k"):
        return "fused"  # attention over a sequence the block fused from text and image
    return None


def execution_order(unet: nn.Module, modules) -> list[nn.Module]:
    """``modules`` (of ``unet``) in the order one forward pass first calls them."""
    order: list[nn.Module] = []
    handles = [m.register_forward_pre_hook(lambda mod, args: order.append(mod)) for m in modules]
    try:
        with torch.no_grad():
            unet(**kind_of(unet).trace_inputs(unet))
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))


def sites(unet: nn.Module) -> tuple[CrossAttnSite, ...]:
    """The UNet's cross-attention sites in execution order, from one traced forward pass.

    Dict order of ``named_modules`` and sorted names are both wrong (the mid block runs between the
    down and up blocks), so the order is read off a real call. The result is cached per UNet.

    Raises:
        ValueError: the UNet has no cross-attention layer.
    """
    if unet in _CACHE:
        return _CACHE[unet]
    candidates = {m: name for name, m in unet.named_modules() if _kind(m) is not None}
    if not candidates:
        raise ValueError(
            f"{type(unet).__name__} has no cross-attention layer (no attention module with "
            "cross_attention_dim or added_kv_proj_dim): text never enters it, so there is nothing "
            "to localize. Pass the text-conditional UNet (pipeline.unet)."
        )
    result = []
    for i, m in enumerate(execution_order(unet, candidates)):
        kind = _kind(m)
        proj = getattr(m, "add_k_proj" if kind in ("added_kv", "joint") else "to_k")
        result.append(
            CrossAttnSite(
                index=i,
                path=candidates[m],
                kind=kind,
                context_dim=proj.in_features,
                inner_dim=proj.out_features,
                heads=m.heads,
            )
        )
    _CACHE[unet] = tuple(result)
    return _CACHE[unet]


def site_module(unet: nn.Module, site: CrossAttnSite) -> nn.Module:
    """The attention module of a site."""
    return unet.get_submodule(site.path)


def site_inputs(unet: nn.Module, site: CrossAttnSite, context: torch.Tensor) -> torch.Tensor:
    """What a site's key/value projections read for a UNet context: (N, T, d).

    Raises:
        ValueError: a joint-attention site, whose text stream depends on the image and on the
            blocks before it, so no function of the prompt alone gives it.
    """
    if site.kind in ("joint", "fused"):
        raise ValueError(
            f"Site {site.index} ({site.path}) is a joint-attention block: the text it reads is "
            "the text stream as earlier blocks updated it beside the image, not a function of the "
            "prompt alone; closed-form edits read it along sampling runs instead "
            "(loco_lightning.editing.streams)."
        )
    attn = unet.get_submodule(site.path)
    ctx = kind_of(unet).text_states(unet, context, None)
    return attn.norm_encoder_hidden_states(ctx) if attn.norm_cross else ctx
