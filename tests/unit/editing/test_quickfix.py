"""Diff-QuickFix against an independent solution of its objective, on hand-computed inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loco_lightning.editing.quickfix import CLIP_LAYER0_OUT, QuickFix, find_layer
from loco_lightning.editing.requests import EditRequest, key_positions
from tests.helpers import mini_model
from tests.unit.editing.test_closed_form import numpy_solution

STRIPED = EditRequest(
    "striped",
    "",
    ("a {} red circle", "one blue square in {} style"),
    ("a red circle", "one blue square"),
)
KEEP = ("a green dotted star", "a white filled heart")


@torch.no_grad()
def out_proj_inputs(model, prompts: list[str]) -> torch.Tensor:
    """Layer 0's attention output before out_proj, computed by hand from the CLIP weights:
    embeddings, layer norm, causal multi-head attention (no hooks, no transformers forward)."""
    tok, enc = model.pipeline.tokenizer, model.pipeline.text_encoder
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    text = getattr(enc, "text_model", enc)  # transformers 4 wraps the text model
    h = text.embeddings(input_ids=ids.input_ids)
    layer = text.encoder.layers[0]
    h = layer.layer_norm1(h)
    attn = layer.self_attn
    b, t, d = h.shape
    heads = attn.num_heads

    def split(x):
        return x.view(b, t, heads, d // heads).transpose(1, 2)

    q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
    scores = q @ k.transpose(-1, -2) / (d // heads) ** 0.5
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
@pytest.mark.parametrize("preserve", [(), KEEP])
def test_the_edit_is_the_least_squares_solution_of_its_objective(family, preserve):
    model = mini_model(family)
    editor = QuickFix(lam=0.1, preserve=preserve, keep_empty=False)
    weight = find_layer(model.pipeline.text_encoder, CLIP_LAYER0_OUT)[1].weight
    before = weight.detach().clone()
    triples = STRIPED.pairs()
    xs = out_proj_inputs(model, [s for s, _, _ in triples])
    ys = out_proj_inputs(model, [t for _, _, t in triples])
    pos = [p[0] for p in key_positions(model.encoder_tokens(), triples, "last_subject")]
    x = torch.stack([xs[i, a] for i, (a, _) in enumerate(pos)]).double().numpy()
    y = torch.stack([ys[i, b] for i, (_, b) in enumerate(pos)]).double().numpy()
    p = out_proj_inputs(model, list(preserve)).flatten(0, 1).double().numpy() if preserve else None
    expected = numpy_solution(before.double().numpy(), x, y, 0.1, p) - before.double().numpy()

    result = editor.compute(model, [STRIPED])
    assert torch.equal(weight, before)  # computing changes nothing
    with result.applied(model):
        [(name, delta)] = result.deltas.items()
        assert name.endswith(f"{CLIP_LAYER0_OUT}.weight") and result.component == "text_encoder"
        assert np.abs(delta.double().numpy() - expected).max() < 1e-3 * np.abs(expected).max()
        assert torch.allclose(weight, before + delta, atol=1e-6)
    assert torch.equal(weight, before)


def test_a_small_lambda_makes_the_concept_token_read_as_the_target_token(sd1):
    model = sd1
    proj = find_layer(model.pipeline.text_encoder, CLIP_LAYER0_OUT)[1]
    triples = STRIPED.pairs()
    xs = out_proj_inputs(model, [s for s, _, _ in triples])
    ys = out_proj_inputs(model, [t for _, _, t in triples])
    pos = [p[0] for p in key_positions(model.encoder_tokens(), triples, "last_subject")]
    want = torch.stack([proj(ys[i, b]) for i, (_, b) in enumerate(pos)])
    result = QuickFix(lam=1e-6, keep_empty=False).compute(model, [STRIPED])
    with result.applied(model):
        got = torch.stack([proj(xs[i, a]) for i, (a, _) in enumerate(pos)])
        assert torch.allclose(got, want, atol=1e-3)
        # and the text encoder's output for the concept prompt has moved
        moved = model.encode([triples[0][0]]).context
    assert (moved - model.encode([triples[0][0]]).context).abs().max() > 1e-3
