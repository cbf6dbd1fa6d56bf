"""Neuron-level localization and editing inside the located sites.

Output neurons of the text key/value projections are ranked by a z-score between their
activations on concept prompts and on the same prompts without the concept; the top k are then
replaced at inference by their concept-free mean (through the executor) or zeroed in the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from loco_lightning.editing.editors import SiteChoice, SiteEditor
from loco_lightning.editing.edits import ActivationEdit, Edit, WeightEdit
from loco_lightning.editing.requests import EditRequest
from loco_lightning.editing.streams import run_activations
from loco_lightning.hooks import NeuronAblation, site_inputs, sites
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
    s = sites(model.denoiser)[site]
    proj = getattr(model.denoiser.get_submodule(s.path), s.projection(projection))

    def acts(prompts: list[str]) -> Tensor:
        if s.kind in ("joint", "fused"):  # the text stream depends on the image: sample it
            return run_activations(model, site, prompts, projection)
        return proj(site_inputs(model.denoiser, s, model.encode(prompts).context)).flatten(0, 1)

    a, b = acts(concept).float(), acts(neutral).float()
    z = (a.mean(0) - b.mean(0)) / (a.var(0) / len(a) + b.var(0) / len(b) + 1e-12).sqrt()
    return z, b.mean(0)


@dataclass(frozen=True)
class Neurons(SiteEditor, name="neurons"):
    """Ablate the k most concept-specific output neurons per site and projection (ranked by
    :func:`neuron_zscores` between the requests' prompts with and without the concept).

    Attributes:
        sites: see :class:`SiteEditor` (the LocoGen window by default).
        k: neurons per site and projection (at most the projection's width; more is refused).
        projections: ``k``, ``v`` or both.
        mode: ``mean`` (outputs replaced by their concept-free mean, through the executor, on
            the conditional samples) or ``zero`` (weight rows zeroed: a weight edit).
    """

    sites: tuple[int, ...] | SiteChoice = "locogen"
    k: int = 10
    projections: tuple[Projection, ...] = ("k", "v")
    mode: Literal["mean", "zero"] = "mean"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k={self.k}: ablate at least one neuron per site and projection.")

    def compute(self, model: LocoModel, requests: list[EditRequest]) -> Edit:
        triples = [t for r in requests for t in r.pairs()]
        concept, neutral = [s for s, _, _ in triples], [w for _, w, _ in triples]
        site_indices = self.site_indices(model)
        fused = [i for i in site_indices if sites(model.denoiser)[i].kind == "fused"]
        if fused and self.mode == "zero":
            raise ValueError(
                f"mode=zero at sites {fused}: single-stream blocks project text and image with "
                "the same to_k/to_v, so zeroing their rows would silence the image's neurons "
                "too; use mode: mean (it ablates the text tokens' outputs only)."
            )
        specs, deltas, chosen = [], {}, {}
        for index in site_indices:
            s = sites(model.denoiser)[index]
            attn = model.denoiser.get_submodule(s.path)
            for p in self.projections:
                z, mean = neuron_zscores(model, index, concept, neutral, p)
                if self.k > len(z):
                    raise ValueError(
                        f"k={self.k}: site {index}'s {p} projection has {len(z)} neurons; give "
                        f"k <= {len(z)} (k is per site and projection)."
                    )
                top = torch.topk(z.abs(), self.k).indices.sort().values
                chosen[f"{index}/{p}"] = top.tolist()
                if self.mode == "mean":
                    values = tuple(mean[top].tolist())
                    specs.append(NeuronAblation((index,), tuple(top.tolist()), p, value=values))
                    continue
                proj = getattr(attn, s.projection(p))
                for name, param in (("weight", proj.weight), ("bias", proj.bias)):
                    if param is None:
                        continue
                    delta = torch.zeros_like(param)
                    delta[top] = -param.detach()[top]
                    deltas[f"{s.path}.{s.projection(p)}.{name}"] = delta
        metadata = {"neurons": chosen, "sites": list(site_indices)}
        if self.mode == "mean":
            return ActivationEdit(specs, metadata)
        return WeightEdit(deltas, metadata, model.family.denoiser)
