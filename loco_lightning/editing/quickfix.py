"""Diff-QuickFix (Basu et al., ICLR 2024): the closed-form edit of the text encoder's one causal
state, the output projection of its first self-attention layer.

Causal tracing finds that in CLIP text encoders the concept is carried by self-attention layer 0
at the last subject token; Diff-QuickFix remaps that projection's input there to the target's,
with the same ridge objective as LocoEdit (``edit_factor``) on a different weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from loco_lightning.editing.closed_form import edit_factor, weight_delta
from loco_lightning.editing.editors import ClosedForm, check_scales, resolve_preserve
from loco_lightning.editing.edits import WeightEdit
from loco_lightning.editing.requests import EditRequest, KeyTokens, key_positions, preserved
from loco_lightning.models import LocoModel

CLIP_LAYER0_OUT = "encoder.layers.0.self_attn.out_proj"  # transformers 4 prefixes text_model.


@dataclass(frozen=True)
class QuickFix(ClosedForm, name="quickfix"):
    """Diff-QuickFix: ``W = Ŵ M`` (``edit_factor``) of one text-encoder linear layer, with x the
    layer's inputs at the concept prompts' key positions and y its inputs at the matching
    positions of the target prompts, so that W x = Ŵ y (the bias is added on both sides).

    Attributes:
        layer: the linear layer inside the text encoder, by name or name suffix (CLIP: layer
            0's ``out_proj``; a T5 encoder's would be ``block.0.layer.0.SelfAttention.o``).
        lam: ridge strength λ.
        key_tokens: which token positions are remapped (see ``key_positions``).
        preserve: prompts whose inputs to the layer keep their outputs (every position), or an
            ``*.edit.yaml`` path.
        component: the pipeline's text encoder to edit.
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm` (``keep_empty`` keeps the
            layer's outputs for the empty prompt, so the unconditional branch is encoded as before).
    """

    layer: str = CLIP_LAYER0_OUT
    lam: float = 0.01
    key_tokens: KeyTokens = "last_subject"
    preserve: tuple[str, ...] | str = ()
    component: str = "text_encoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "lam")
        resolve_preserve(self)

    @torch.no_grad()
    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        encoder = model.component(self.component)
        tokens = model.encoder_tokens(self.component.replace("text_encoder", "tokenizer"))
        path, layer = find_layer(encoder, self.layer)
        triples = [t for r in requests for t in r.pairs()]
        xs = layer_inputs(model, layer, [s for s, _, _ in triples])
        ys = layer_inputs(model, layer, [t for _, _, t in triples])
        pos = key_positions(tokens, triples, self.key_tokens)
        x = torch.stack([xs[i, a] for i, p in enumerate(pos) for a, _ in p])  # (n, d)
        y = torch.stack([ys[i, b] for i, p in enumerate(pos) for _, b in p])
        preserve = exact = None
        kept = preserved(self, requests)
        if kept:
            preserve = layer_inputs(model, layer, list(kept)).flatten(0, 1)  # (k, d)
        if self.keep_empty:
            exact = layer_inputs(model, layer, [""]).flatten(0, 1)  # (T, d)
        dtype = getattr(torch, self.solve_dtype)
        factor = edit_factor(x, y, self.lam, preserve, 1.0, dtype, exact, self.keep_rtol)
        delta = weight_delta(layer.weight, factor)
        return WeightEdit({f"{path}.weight": delta}, {}, self.component)


@torch.no_grad()
def layer_inputs(model: LocoModel, layer: nn.Module, prompts: list[str]) -> Tensor:
    """What ``layer`` reads when the pipeline encodes ``prompts``: (N, T, d)."""
    seen: list[Tensor] = []
    handle = layer.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        model.encode(prompts)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise RuntimeError(f"{layer} ran {len(seen)} times for one encoding; expected once.")
    return seen[0]


def find_layer(encoder: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """The module named ``layer``, or the one whose name ends with it (transformers versions
    differ in a ``text_model.`` prefix): (its full name, the module)."""
    found = [(n, m) for n, m in encoder.named_modules() if n == layer or n.endswith(f".{layer}")]
    if len(found) != 1:
        options = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear)][:12]
        raise AttributeError(
            f"{type(encoder).__name__} has {len(found)} modules named {layer!r}; name exactly one "
            f"linear layer, e.g. one of {options}"
        )
    return found[0]
