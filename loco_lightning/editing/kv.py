"""The closed form every cross-attention key/value editor shares (LocoEdit, UCE, TIME, …).

They differ only in which text vectors they regress (token positions, preserve rows, the
target's side) and in their scales; :class:`Regression` holds the first (encoded from prompts in
one text-encoder call, or built from vectors an editor derives itself, as RECE does),
:func:`kv_edit` does the rest: one solve per distinct input and ridge strength, deltas of the
chosen sites' ``to_k``/``to_v``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from loco_lightning.editing.closed_form import edit_factor, weight_delta
from loco_lightning.editing.edits import WeightEdit
from loco_lightning.editing.streams import stream_inputs
from loco_lightning.hooks import sites
from loco_lightning.hooks.executor import check_sites
from loco_lightning.hooks.sites import site_inputs
from loco_lightning.models import LocoModel
from loco_lightning.models.pipeline import Conditioning

SolveDtype = Literal["float32", "float64"]


@dataclass(frozen=True)
class Regression:
    """The text vectors a key/value edit regresses: text contexts and token positions.

    Attributes:
        sources: (N, T, d) contexts whose vectors the edit remaps (prompts with the concept).
        targets: (N, T, d) contexts whose vectors give the new outputs, one per source.
        positions: per source, (position in source, position in target) pairs.
        preserve: (P, T, d) contexts whose outputs should not move (a soft, weighted term).
        preserve_at: per preserve context, the positions used; None: every position.
        keep: (K, T, d) contexts whose every vector keeps its output exactly (the empty prompt).
        added: the rows' other denoiser inputs (SD3's pooled CLIP), sources then targets then
            preserve, where they were encoded from prompts; joint attention reads them.
    """

    sources: Tensor
    targets: Tensor
    positions: tuple[tuple[tuple[int, int], ...], ...]
    preserve: Tensor | None = None
    preserve_at: tuple[tuple[int, ...], ...] | None = None
    keep: Tensor | None = None
    added: dict[str, Tensor] | None = None

    def conditionings(self) -> tuple[Conditioning, Conditioning, Conditioning | None]:
        """Sources, targets and preserve prompts as the denoiser takes them.

        Raises:
            ValueError: the regression was built from vectors, not encoded prompts.
        """
        if self.added is None:
            raise ValueError(
                "This editor regresses text vectors it derives itself, not encoded prompts; "
                "joint attention (SD3) reads the text stream a prompt makes along a sampling "
                "run, so it needs prompts: use LocoEdit, UCE, TIME or MACE there."
            )
        n = self.sources.shape[0]
        part = {k: (v[:n], v[n : 2 * n], v[2 * n :]) for k, v in self.added.items()}
        sources, targets, preserve = (
            Conditioning(c, {k: p[j] for k, p in part.items()} or None)
            for j, c in enumerate((self.sources, self.targets, self.preserve))
        )
        return sources, targets, preserve if self.preserve is not None else None

    def vectors(
        self, inputs=lambda context: context
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """The rows the closed form regresses, of ``inputs(context)`` (a site's projection
        inputs; the contexts themselves by default): sources at their positions, targets at the
        paired ones, preserve rows (None without), kept rows (every position; None without)."""
        device = self.sources.device
        pair = torch.tensor([i for i, p in enumerate(self.positions) for _ in p], device=device)
        src_at = torch.tensor([a for p in self.positions for a, _ in p], device=device)
        tgt_at = torch.tensor([b for p in self.positions for _, b in p], device=device)
        kept = None
        if self.preserve is not None:
            kept = inputs(self.preserve)
            if self.preserve_at is None:
                kept = kept.flatten(0, 1)
            else:
                at = self.preserve_at
                kept = kept[[i for i, a in enumerate(at) for _ in a], [p for a in at for p in a]]
        exact = None if self.keep is None else inputs(self.keep).flatten(0, 1)
        return inputs(self.sources)[pair, src_at], inputs(self.targets)[pair, tgt_at], kept, exact

    @classmethod
    def of_prompts(
        cls,
        model: LocoModel,
        sources: list[str],
        targets: list[str],
        positions,
        preserve: tuple[str, ...] = (),
        preserve_at: tuple[tuple[int, ...], ...] | None = None,
        keep_empty: bool = True,
    ) -> Regression:
        """The regression of these prompts, encoded in one text-encoder call."""
        encoded = model.encode(list(sources) + list(targets) + list(preserve))
        context = encoded.context
        n, n_p = len(sources), len(preserve)
        return cls(
            context[:n],
            context[n : 2 * n],
            tuple(tuple(p) for p in positions),
            context[2 * n :] if n_p else None,
            preserve_at,
            model.empty().context if keep_empty else None,
            encoded.added or {},
        )


@torch.no_grad()
def kv_edit(
    model: LocoModel,
    site_indices: tuple[int, ...],
    rows: Regression,
    lambdas: dict[Literal["k", "v"], float],
    preserve_scale: float = 1.0,
    solve_dtype: SolveDtype = "float64",
    keep_rtol: float = 1e-4,
) -> WeightEdit:
    """The edit ``W = Ŵ M`` (``edit_factor``) of the projections in ``lambdas`` (``k``: keys,
    ``v``: values, with their ridge strengths) at each site; the model is not changed.

    ``rows.keep`` (the empty prompt: the unconditional branch classifier-free guidance
    subtracts) is kept exactly: every direction of its span above ``keep_rtol`` times its
    largest singular value. Sites whose projections read the same inputs (no per-site
    ``norm_cross``) share one solve.

    Joint-attention sites (SD3) read the text stream, so their rows come from
    :func:`~loco_lightning.editing.streams.stream_inputs`: at each window block, the source's
    stream at its positions is mapped to the target's stream on the same image (what a LocoGen
    window swap puts there), one row per position, step and seed of the unedited model's
    sampling runs; preserve prompts' streams alike; the empty prompt's stream averaged over
    those runs is kept exactly.
    """
    unet = model.denoiser
    found = sites(unet)
    check_sites(found, site_indices, "the edit")
    dtype = getattr(torch, solve_dtype)

    factors: dict[tuple, Tensor] = {}
    inputs: dict[object, tuple] = {}
    deltas: dict[str, Tensor] = {}
    fused = [i for i in site_indices if found[i].kind == "fused"]
    if fused:
        joint_sites = [s.index for s in found if s.kind == "joint"]
        raise ValueError(
            f"Sites {fused} are single-stream blocks: their to_k/to_v project text and image "
            "tokens alike, so a key/value edit there would move the image's keys too. Edit the "
            f"double-stream (joint) blocks instead: sites {joint_sites}."
        )
    joint = tuple(i for i in site_indices if found[i].kind == "joint")
    if joint:
        sources, targets, preserve = rows.conditionings()
        streams = stream_inputs(
            model, joint, sources, targets, rows.positions, preserve, rows.preserve_at
        )
        for index, (x, y, kept, empty) in streams.items():
            inputs[index] = (x, y, kept, empty if rows.keep is not None else None)
    for index in site_indices:
        site = found[index]
        attn = unet.get_submodule(site.path)
        shared = site.kind in ("attn2", "added_kv") and attn.norm_cross is None
        where = "shared" if shared else index
        if where not in inputs:
            inputs[where] = rows.vectors(
                lambda context, site=site: site_inputs(unet, site, context)
            )
        x, y, p, e = inputs[where]
        for proj, lam in lambdas.items():
            key = (where, lam)
            if key not in factors:
                factors[key] = edit_factor(x, y, lam, p, preserve_scale, dtype, e, keep_rtol)
            weight = getattr(attn, site.projection(proj)).weight
            deltas[f"{site.path}.{site.projection(proj)}.weight"] = weight_delta(
                weight, factors[key]
            )
    metadata = {"sites": list(site_indices), "site_paths": [found[i].path for i in site_indices]}
    return WeightEdit(deltas, metadata, model.family.denoiser)
