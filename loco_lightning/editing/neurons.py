"""Neuron-level localization and editing inside the located sites.

Output neurons of the text key/value projections are ranked by a z-score between their
activations on concept prompts and on the same prompts without the concept; the top k are then
replaced at inference by their concept-free mean (through the executor) or zeroed in the weights.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from loco_lightning.editing.locoedit import EditResult, site_inputs
from loco_lightning.hooks import NeuronAblation, intervene, sites
from loco_lightning.models import LocoModel

Projection = Literal["k", "v"]


@torch.no_grad()
def neuron_zscores(
    model: LocoModel, site: int, concept: list[str], neutral: list[str], projection: Projection
) -> tuple[Tensor, Tensor]:
    """Per output neuron: Welch z-score of concept vs concept-free activations, and the
    concept-free mean. Activations are taken at every token position of every prompt.

    Returns:
        z (inner,), neutral mean (inner,).
    """
    s = sites(model.unet)[site]
    proj = getattr(model.unet.get_submodule(s.path), s.projection(projection))

    def acts(prompts: list[str]) -> Tensor:
        return proj(site_inputs(model.unet, s, model.encode(prompts).context)).flatten(0, 1)

    a, b = acts(concept).float(), acts(neutral).float()
    z = (a.mean(0) - b.mean(0)) / (a.var(0) / len(a) + b.var(0) / len(b) + 1e-12).sqrt()
    return z, b.mean(0)


@dataclass
class ActivationEdit:
    """An edit made of executor interventions: ``redo`` installs them, ``undo`` removes them."""

    specs: list
    metadata: dict = field(default_factory=dict)
    cfg: bool = True
    component: str = "unet"
    _stack: ExitStack | None = field(default=None, repr=False)

    def redo(self, unet: nn.Module) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(intervene(unet, self.specs, cfg=self.cfg))

    def undo(self, unet: nn.Module) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


def neuron_edit(
    model: LocoModel,
    site_indices: tuple[int, ...],
    concept: list[str],
    neutral: list[str],
    k: int,
    projections: tuple[Projection, ...] = ("k", "v"),
    mode: Literal["mean", "zero"] = "mean",
) -> ActivationEdit | EditResult:
    """Ablate the k most concept-specific neurons per site and projection.

    ``mean`` replaces their outputs with the concept-free mean through the executor; ``zero``
    zeroes their weight rows (and bias), a weight edit that saves and loads like LocoEdit's.
    """
    specs, deltas, originals, chosen = [], {}, {}, {}
    for index in site_indices:
        s = sites(model.unet)[index]
        attn = model.unet.get_submodule(s.path)
        for p in projections:
            z, mean = neuron_zscores(model, index, concept, neutral, p)
            top = torch.topk(z.abs(), min(k, len(z))).indices.sort().values
            chosen[f"{index}/{p}"] = top.tolist()
            if mode == "mean":
                values = tuple(mean[top].tolist())
                specs.append(NeuronAblation((index,), tuple(top.tolist()), p, value=values))
                continue
            proj = getattr(attn, s.projection(p))
            for name, param in (("weight", proj.weight), ("bias", proj.bias)):
                if param is None:
                    continue
                key = f"{s.path}.{s.projection(p)}.{name}"
                originals[key] = param.detach().clone()
                delta = torch.zeros_like(param)
                delta[top] = -param.detach()[top]
                deltas[key] = delta
    metadata = {"k": k, "mode": mode, "neurons": chosen, "sites": list(site_indices)}
    if mode == "mean":
        return ActivationEdit(specs, metadata)
    return EditResult(deltas, originals, metadata)
