"""Record(contribution): the attention output a sample's concept tokens carry, per site and call,
equals the same quantity computed from diffusers' own attention scores."""

from __future__ import annotations

import pytest
import torch

from loco_lightning.hooks import Record, intervene, sites
from tests.helpers import denoiser_inputs, mini_model

PROMPTS = ["a red striped circle", "a blue dotted square"]
TOKENS = ((7, 8, 9), (2, 3))  # any positions: the measure does not care what they hold


def reference(attn, hidden: torch.Tensor, context: torch.Tensor, mask, tokens) -> float:
    """diffusers' get_attention_scores on the module's own projections (IF: text keys first;
    SANA: queries and keys normalised across heads, as its processor does)."""
    ctx = attn.norm_encoder_hidden_states(context) if attn.norm_cross else context
    k_proj, v_proj = (attn.add_k_proj, attn.add_v_proj) if attn.added_kv_proj_dim else (
        attn.to_k, attn.to_v)  # fmt: skip
    q, k = attn.to_q(hidden), k_proj(ctx)
    if attn.norm_k is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    q, k, v = (attn.head_to_batch_dim(x) for x in (q, k, v_proj(ctx)))
    if attn.added_kv_proj_dim and not attn.only_cross_attention:
        k = torch.cat([k, attn.head_to_batch_dim(attn.to_k(hidden))], 1)
        v = torch.cat([v, attn.head_to_batch_dim(attn.to_v(hidden))], 1)
    if mask is not None:
        mask = attn.prepare_attention_mask(mask, k.shape[1], 1)
    probs = attn.get_attention_scores(q, k, mask)  # (heads, Q, K)
    tok = list(tokens)
    o = attn.batch_to_head_dim(probs[:, :, tok] @ v[:, tok])  # (1, Q, inner)
    return attn.to_out[0](o).norm(dim=-1).mean().item()


@pytest.mark.parametrize("family", ["sd1", "if", "pixart", "sana"])
def test_contribution_equals_the_reference_from_diffusers_attention_scores(family):
    model = mini_model(family)
    net = model.denoiser
    site = sites(net)[2]
    attn = net.get_submodule(site.path)
    seen = []

    def grab(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        seen.append((hidden, kwargs["encoder_hidden_states"], kwargs.get("attention_mask")))

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    spec = Record((site.index,), ("contribution",), TOKENS)
    try:
        with torch.no_grad(), intervene(net, [spec], cfg=False) as trace:
            net(**denoiser_inputs(model, PROMPTS))
    finally:
        handle.remove()
    [measured] = trace.records[(site.index, "contribution")]
    [(hidden, context, mask)] = seen
    if hidden.ndim == 4:  # UNet feature maps: (B, C, H, W) -> (B, HW, C), as the processor does
        hidden = hidden.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden = attn.group_norm(hidden.transpose(1, 2)).transpose(1, 2)
    with torch.no_grad():
        expected = [
            reference(attn, hidden[b : b + 1], context[b : b + 1],
                      None if mask is None else mask[b : b + 1], TOKENS[b])
            for b in range(len(PROMPTS))
        ]  # fmt: skip
    assert measured.shape == (2,) and measured.min() > 0
    assert torch.allclose(measured, torch.tensor(expected), rtol=1e-4), (measured, expected)


def test_contribution_needs_tokens_for_every_conditional_sample():
    with pytest.raises(ValueError, match="needs tokens"):
        Record((0,), ("contribution",))
    model = mini_model("sd1")
    spec = Record((0,), ("contribution",), ((1,),))  # one tuple, two samples
    inputs = denoiser_inputs(model, PROMPTS)
    match = "tokens for 1 samples, but the batch has 2"
    with pytest.raises(ValueError, match=match), intervene(model.denoiser, [spec], cfg=False):
        model.denoiser(**inputs)
