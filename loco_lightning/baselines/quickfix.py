"""Diff-QuickFix (Basu et al., ICLR 2024): the closed-form edit of the text encoder's one causal
state, the output projection of its first self-attention layer.

Causal tracing finds that in CLIP text encoders the concept is carried by self-attention layer 0
at the last subject token; Diff-QuickFix remaps that projection's input there to the target's,
with the same ridge objective as LocoEdit (``edit_factor``) on a different weight.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from loco_lightning.editing.closed_form import edit_factor, edited_weight
from loco_lightning.editing.evaluation import EditEvaluation
from loco_lightning.editing.locoedit import EditResult
from loco_lightning.editing.requests import (
    EditRequest,
    KeyTokens,
    edit_requests,
    key_positions,
    preserve_prompts,
)
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import Diffusion

CLIP_LAYER0_OUT = "encoder.layers.0.self_attn.out_proj"  # transformers 4 prefixes text_model.


@dataclass(frozen=True)
class QuickFixParams:
    """How to edit.

    Attributes:
        layer: the linear layer inside the text encoder, by name or name suffix (CLIP: layer
            0's ``out_proj``; a T5 encoder's would be ``block.0.layer.0.SelfAttention.o``).
        lam: ridge strength λ.
        key_tokens: which token positions are remapped (see ``key_positions``).
        preserve: prompts whose inputs to the layer keep their outputs (every position).
        component: the pipeline's text encoder to edit.
    """

    layer: str = CLIP_LAYER0_OUT
    lam: float = 0.01
    key_tokens: KeyTokens = "last_subject"
    preserve: tuple[str, ...] = ()
    component: str = "text_encoder"


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


@torch.no_grad()
def apply_quickfix(
    model: LocoModel, requests: list[EditRequest], params: QuickFixParams
) -> EditResult:
    """Edit ``params.layer`` of the text encoder in place: W = Ŵ M with M from ``edit_factor``.

    x = the layer's inputs at the concept prompts' key positions, y = its inputs at the matching
    positions of the target prompts, so that W x = Ŵ y (the bias is added on both sides).
    """
    if not requests:
        raise ValueError("No edit requests: give at least one {concept, target}.")
    encoder = model.component(params.component)
    tokenizer = getattr(model.pipeline, params.component.replace("text_encoder", "tokenizer"))
    path, layer = find_layer(encoder, params.layer)
    triples = [t for r in requests for t in r.pairs()]
    xs = layer_inputs(model, layer, [s for s, _, _ in triples])
    ys = layer_inputs(model, layer, [t for _, _, t in triples])
    pos = key_positions(tokenizer, triples, params.key_tokens)
    x = torch.stack([xs[i, a] for i, p in enumerate(pos) for a, _ in p])  # (n, d)
    y = torch.stack([ys[i, b] for i, p in enumerate(pos) for _, b in p])
    keep = None
    if params.preserve:
        keep = layer_inputs(model, layer, list(params.preserve)).flatten(0, 1)  # (k, d)
    weight = layer.weight
    name = f"{path}.weight"
    original = weight.detach().clone()
    new = edited_weight(weight, edit_factor(x, y, params.lam, keep))
    delta = (new.float() - weight.float()).to(weight.dtype)
    weight.copy_(new)
    metadata = {
        "method": "quickfix",
        "family": model.family.name,
        "params": asdict(params),
        "requests": [asdict(r) for r in requests],
    }
    return EditResult({name: delta}, {name: original}, metadata, params.component)


def timed_quickfix(
    model: LocoModel, requests: list[EditRequest], params: QuickFixParams
) -> EditResult:
    """Diff-QuickFix solved and then undone (the harness applies it), its time in metadata."""
    start = time.perf_counter()
    result = apply_quickfix(model, requests, params)
    result.metadata["seconds"] = time.perf_counter() - start
    result.undo(model.component(params.component))
    return result


class QuickFixModule(EditEvaluation):
    """Diff-QuickFix solved in ``on_fit_start`` and evaluated with the triad.

    Args:
        requests: what to edit, inline or the path of an ``*.edit.yaml`` prompt set.
        lam: ridge strength λ.
        layer: the text-encoder layer to edit (default: CLIP's layer-0 self-attention
            ``out_proj``).
        component: the pipeline's text encoder.
        key_tokens: ``last_subject`` (Diff-QuickFix), ``last_subject_eos`` or ``aligned``.
        preserve: prompts whose layer outputs must not move, inline or an ``*.edit.yaml`` path.
        diffusion, clip, fid_weights, output_dir: see
            :class:`EditEvaluation`.
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        lam: float = 0.01,
        layer: str = CLIP_LAYER0_OUT,
        component: str = "text_encoder",
        key_tokens: KeyTokens = "last_subject",
        preserve: list[str] | str = [],  # noqa: B006
        clip: str = "worldclip",
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/quickfix/run",
    ) -> None:
        super().__init__(diffusion, clip, fid_weights, output_dir)
        self.save_hyperparameters()
        self.requests = edit_requests(requests)
        self.params = QuickFixParams(
            layer, lam, key_tokens, tuple(preserve_prompts(preserve)), component
        )

    def on_fit_start(self) -> None:
        self.edits["quickfix"] = timed_quickfix(self.model, self.requests, self.params)
