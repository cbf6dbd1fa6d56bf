"""Published closed-form editors of the cross-attention keys/values, at their own defaults.

Each is the shared closed form (:func:`kv_edit`) with the token rows, projections and scales its
public code uses; ``tests/unit/editing/test_published.py`` checks each against its formula
written out independently. Beyond the papers, every one keeps the empty prompt's keys and values
by default (``keep_empty``), so the unconditional branch of classifier-free guidance stays put.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from loco_lightning.editing.closed_form import edit_factor, span_basis, weight_delta
from loco_lightning.editing.editors import (
    ClosedForm,
    SiteChoice,
    SiteEditor,
    check_scales,
    resolve_preserve,
)
from loco_lightning.editing.edits import WeightEdit
from loco_lightning.editing.kv import Regression, kv_edit
from loco_lightning.editing.requests import (
    EditRequest,
    KeyTokens,
    key_positions,
    last_token,
    preserved,
)
from loco_lightning.hooks import site_inputs, sites
from loco_lightning.models import LocoModel
from loco_lightning.models.tokenizers import per_segment

TIME_AUGMENTATIONS = ("A photo of ", "An image of ", "A picture of ")


@dataclass(frozen=True, kw_only=True)
class UCEScales(ClosedForm):
    """UCE's scales, which its key/value form (:class:`UCE`) and its transformer form
    (:class:`UCEEmbedder`) share: both solve ``W`` with ridge λ / e and preserve weight p / e.

    Attributes:
        lamb: λ.
        erase_scale: e.
        preserve_scale: p; None: the form's default (:meth:`ridge`).
        preserve: prompts to preserve, or an ``*.edit.yaml`` path.
    """

    lamb: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float | None = None
    preserve: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "lamb", "erase_scale")
        if self.preserve_scale is not None:
            check_scales(self, "preserve_scale", zero_ok=("preserve_scale",))
        resolve_preserve(self)

    def ridge(self, default_preserve: float = 1.0) -> tuple[float, float]:
        """(λ / e, p / e), p being ``default_preserve`` where ``preserve_scale`` is None."""
        p = default_preserve if self.preserve_scale is None else self.preserve_scale
        return self.lamb / self.erase_scale, p / self.erase_scale


@dataclass(frozen=True)
class UCE(SiteEditor, UCEScales, name="uce"):
    """Unified Concept Editing (Gandikota et al., 2024), every site's ``to_k`` and ``to_v``:

        W = (λŴ + e Σ Ŵ c* cᵀ + p Σ Ŵ c_p c_pᵀ)(λI + e Σ c cᵀ + p Σ c_p c_pᵀ)⁻¹

    with c the concept prompt's vector at its last token (before end-of-text), c* the guide's
    (the request's target prompt; UCE's default guide "" gives its start token) and c_p each
    preserve prompt's last-token vector. On diffusion transformers UCE's own code edits the
    caption's way in instead (:class:`UCEEmbedder`); this is its key/value form there.

    Attributes:
        sites: see :class:`SiteEditor` (UCE edits ``all``).
        lamb, erase_scale, preserve: see :class:`UCEScales`.
        preserve_scale: p; None: 1, or with ``variant: "2023"`` max(0.1, 1 / preserve rows).
        variant: ``current`` (its code today) or ``2023`` (its first release: every position
            from the last subject token through the padding, aligned with the guide's tail and
            cut to the shorter; every position of each preserve prompt; "" always preserved).
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm`.
    """

    sites: tuple[int, ...] | SiteChoice = "all"
    variant: Literal["current", "2023"] = "current"

    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        segs = model.segments
        pairs = [(s, t) for r in requests for s, _, t in r.pairs()]
        preserve = preserved(self, requests)
        if self.variant == "current":
            positions = per_segment(
                segs, lambda tok: [((last_token(tok, s), last_token(tok, t)),) for s, t in pairs]
            )
            preserve_at = per_segment(segs, lambda tok: [(last_token(tok, p),) for p in preserve])
        else:
            positions = per_segment(
                segs,
                lambda tok: [
                    tail(last_token(tok, s), last_token(tok, t), tok.length) for s, t in pairs
                ],
            )
            preserve = ("",) + tuple(p for p in preserve if p)
            preserve_at = None  # every position
        lam, scale = self.ridge(1.0 if self.variant == "current" else max(0.1, 1 / len(preserve)))
        rows = Regression.of_prompts(
            model, [s for s, _ in pairs], [t for _, t in pairs], positions, preserve, preserve_at,
            self.keep_empty,
        )  # fmt: skip
        return kv_edit(
            model, self.site_indices(model), rows, {"k": lam, "v": lam}, scale,
            self.solve_dtype, self.keep_rtol,
        )  # fmt: skip


@dataclass(frozen=True)
class UCEEmbedder(UCEScales, name="uce_embedder"):
    """UCE as its own code edits diffusion transformers (FLUX, HiDream): not attention but the
    linear layers that take the text encoders' outputs in, ``context_embedder`` (every caption
    row; on SD3 the CLIP and T5 rows alike) and, with ``pooled``, the pooled caption's
    ``time_text_embed.text_embedder.linear_1``, each with :class:`UCE`'s ``W`` over those
    layers' own inputs.

    Why beside the key/value editors: on joint attention (SD3, FLUX) a block's text keys and
    values read a stream the image has already changed, so no linear map of one block's
    projections reproduces a window swap (on ``world-sd3-planted`` none does: README); these
    layers read the encoders' outputs alone, which no image changes. The edit is not localized:
    every block reads the edited caption.

    Attributes:
        lamb, erase_scale, preserve_scale (None: 1), preserve: see :class:`UCEScales`.
        key_tokens: the caption rows remapped (``key_positions``): ``last_subject`` (UCE's, the
            concept's last token to the target's last token), ``last_subject_eos`` or
            ``aligned`` (every row).
        pooled: edit the pooled projection too (UCE does): the concept prompt's pooled vector
            to its target's, the preserve prompts' kept.
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm` (the empty prompt's rows and
            pooled vector keep their outputs).
    """

    key_tokens: KeyTokens = "last_subject"
    pooled: bool = True

    def layers(self, model: LocoModel) -> dict[str, torch.nn.Linear]:
        """The layers edited, by their names in the denoiser."""
        net = model.denoiser
        embedder = getattr(net, "context_embedder", None)
        if not isinstance(embedder, torch.nn.Linear):
            raise ValueError(
                f"uce_embedder edits a diffusion transformer's linear context_embedder (SD3, "
                f"FLUX); the {model.family.name} denoiser ({type(net).__name__}) has none: use "
                "uce there, which edits the text keys and values."
            )
        out = {"context_embedder": embedder}
        if self.pooled:
            out[POOLED_LAYER] = net.get_submodule(POOLED_LAYER)
        return out

    @torch.no_grad()
    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        layers = self.layers(model)
        segs = model.segments
        triples = [t for r in requests for t in r.pairs()]
        preserve = preserved(self, requests)
        rows = Regression.of_prompts(
            model, [s for s, _, _ in triples], [t for _, _, t in triples],
            key_positions(segs, triples, self.key_tokens), preserve,
            per_segment(segs, lambda tok: [(last_token(tok, p),) for p in preserve])
            if preserve else None,
            self.keep_empty,
        )  # fmt: skip
        inputs = {"context_embedder": rows.vectors()}
        if self.pooled:
            pooled = rows.added["pooled_projections"]
            n = len(triples)
            kept = model.empty().added["pooled_projections"] if self.keep_empty else None
            inputs[POOLED_LAYER] = (
                pooled[:n],
                pooled[n : 2 * n],
                pooled[2 * n :] if preserve else None,
                kept,
            )
        lam, scale = self.ridge()
        deltas = {}
        for name, layer in layers.items():
            x, y, p, e = inputs[name]
            dtype = getattr(torch, self.solve_dtype)
            factor = edit_factor(x, y, lam, p, scale, dtype, e, self.keep_rtol)
            deltas[f"{name}.weight"] = weight_delta(layer.weight, factor)
        return WeightEdit(deltas, {"layers": list(layers)}, model.family.denoiser)


POOLED_LAYER = "time_text_embed.text_embedder.linear_1"  # SD3's and FLUX's pooled caption in


def tail(source_end: int, target_end: int, length: int) -> tuple[tuple[int, int], ...]:
    """UCE 2023's rows: from each prompt's last token to the end of the padding, offset for
    offset, as many as the shorter tail has."""
    n = length - max(source_end, target_end)
    return tuple((source_end + k, target_end + k) for k in range(n))


@dataclass(frozen=True)
class TIME(SiteEditor, ClosedForm, name="time"):
    """Text-to-Image Model Editing (Orgad et al., 2023): ``to_v`` (and ``to_k`` on request) of
    every site, every token position of the source prompt mapped to the destination's:

        W = (λŴ + Σ Ŵ c*_π(i) c_iᵀ)(λI + Σ c_i c_iᵀ)⁻¹

    over the positions i of each source prompt (start token, words, end-of-text, padding) and of
    its augmentations, with π TIME's greedy token match: each source token goes to the next
    destination position with the same id; padding keeps its offset from end-of-text. A source
    token the destination never has (TIME's code assumes none) goes to the next unmatched
    destination position.

    Attributes:
        sites: see :class:`SiteEditor` (TIME edits ``all``).
        lamb: λ.
        with_to_k: also edit ``to_k``.
        augmentations: prefixes put before both prompts of each pair, each giving one more pair
            (TIME's defaults; a world whose vocabulary lacks "photo" may want others).
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm`.
    """

    sites: tuple[int, ...] | SiteChoice = "all"
    lamb: float = 0.1
    with_to_k: bool = False
    augmentations: tuple[str, ...] = TIME_AUGMENTATIONS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "lamb")

    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        pairs = []
        for r in requests:
            for s, _, t in r.pairs():
                pairs.append((s, t))
                base = [lower_article(p) for p in (s, t)]
                pairs += [(a + base[0], a + base[1]) for a in self.augmentations]
        pairs = list(dict.fromkeys(pairs))
        positions = per_segment(
            model.segments,
            lambda tok: [greedy_match(*tok.ids([s, t]), tok.length) for s, t in pairs],
        )
        rows = Regression.of_prompts(
            model, [s for s, _ in pairs], [t for _, t in pairs], positions,
            keep_empty=self.keep_empty,
        )  # fmt: skip
        lambdas = {"k": self.lamb, "v": self.lamb} if self.with_to_k else {"v": self.lamb}
        return kv_edit(
            model, self.site_indices(model), rows, lambdas, 1.0, self.solve_dtype, self.keep_rtol
        )


def lower_article(prompt: str) -> str:
    """TIME's base prompt for augmenting: a leading "A " becomes "a "."""
    return "a " + prompt[2:] if prompt.startswith("A ") else prompt


def greedy_match(src: list[int], dst: list[int], length: int) -> tuple[tuple[int, int], ...]:
    """TIME's alignment of two unpadded id lists (start and end tokens included): source token i
    goes to the next destination position j with the same id; after the source's last token, the
    padding keeps its offset from it. Positions are clipped to ``length``."""
    pairs, j = [], 0
    for i, token in enumerate(src[:length]):
        k = j
        while k < len(dst) and dst[k] != token:
            k += 1
        if k < len(dst):
            pairs.append((i, k))
            j = k + 1
        else:  # not in the rest of the destination: the next unmatched position, not consumed
            pairs.append((i, min(j, len(dst) - 1)))
    last_src, last_dst = pairs[-1]
    pairs += [(i, min(length - 1, last_dst + i - last_src)) for i in range(last_src + 1, length)]
    return tuple(pairs)


@dataclass(frozen=True)
class SPEED(SiteEditor, ClosedForm, name="speed"):
    """SPEED (Li et al., 2025): the erasing update projected onto the null space of the retain
    set, with the empty prompt's start token and k-means centres held by a hard constraint:

        M = (S_tt P + αI)⁻¹,  ΔW = Ŵ (S_at − S_tt) P [I − M K (Kᵀ P M K + λI)⁻¹ Kᵀ P] M

    with t the concept prompts' last-token vectors and a the target's (S_tt = mean t tᵀ,
    S_at = mean a tᵀ over the pairs), P the projector onto the directions where the retain
    covariance (mean r rᵀ) is below ``null_threshold``, and K the columns held fixed. The retain
    vectors are the preserve prompts' last tokens (the empty prompt's other tokens without
    any), filtered to those the plain edit moves more than average (``filter``; its IPF) and
    augmented with ``augment`` copies perturbed along the weight's weakest input direction (its
    DPA), again kept where the plain edit moves them more than average.

    Attributes:
        sites: see :class:`SiteEditor` (SPEED edits ``all``).
        projections: ``v`` (its default), ``k`` or both.
        preserve: the retain prompts, or an ``*.edit.yaml`` path.
        retain_scale: α.
        lamb: λ of the constraint (0: held exactly).
        null_threshold: eigenvalue below which a retain direction counts as free (absolute).
        centres: k-means centres of the empty prompt's non-start vectors held fixed.
        filter: keep only retain vectors the plain edit moves more than average.
        augment: perturbed copies of each kept retain vector (0: none).
        seed: seed of the k-means initialisation and of the perturbations.
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm` (``keep_empty`` holds every
            direction of the empty prompt's span, not only its start token and centres).
    """

    sites: tuple[int, ...] | SiteChoice = "all"
    projections: tuple[Literal["k", "v"], ...] = ("v",)
    preserve: tuple[str, ...] | str = ()
    retain_scale: float = 1.0
    lamb: float = 0.0
    null_threshold: float = 0.1
    centres: int = 3
    filter: bool = True
    augment: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "retain_scale", "null_threshold")
        check_scales(self, "lamb", zero_ok=("lamb",))
        resolve_preserve(self)

    @torch.no_grad()
    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        tok = model.tokens
        pairs = [(s, t) for r in requests for s, _, t in r.pairs()]
        n, retain = len(pairs), list(preserved(self, requests))
        prompts = [s for s, _ in pairs] + [t for _, t in pairs] + retain
        context = torch.cat([model.encode(prompts).context, model.empty().context])
        at = [last_token(tok, p) for p in prompts]
        unet, found = model.denoiser, sites(model.denoiser)
        deltas, g = {}, torch.Generator().manual_seed(self.seed)
        dtype = getattr(torch, self.solve_dtype)
        for index in self.site_indices(model):
            site = found[index]
            vec = site_inputs(unet, site, context).to(dtype)  # (N, T, d)
            last = vec[torch.arange(len(at)), at]  # (2n + |retain|, d)
            t, a = last[:n], last[n : 2 * n]
            empty = vec[-1]  # (T, d)
            r = last[2 * n :] if retain else empty[1:]
            hold = self.held(empty, g)
            attn = unet.get_submodule(site.path)
            for proj in self.projections:
                name = f"{site.path}.{site.projection(proj)}.weight"
                w = getattr(attn, site.projection(proj)).weight
                delta = self.update(w.to(dtype), t, a, r, hold, g)
                deltas[name] = delta.to(w.dtype)
        return WeightEdit(deltas, {"sites": list(self.site_indices(model))}, model.family.denoiser)

    def held(self, empty: Tensor, g: torch.Generator) -> Tensor:
        """(d, c) columns the update must not move: the start token and the centres, or with
        ``keep_empty`` a basis of the empty prompt's whole span."""
        if self.keep_empty:
            return span_basis(empty, self.keep_rtol)
        return torch.cat([empty[:1], kmeans(empty[1:], self.centres, g)]).T

    def update(self, w, t, a, r, hold, g) -> Tensor:
        """ΔW of one projection (in the solve's dtype)."""
        d = w.shape[1]
        eye = torch.eye(d, dtype=w.dtype, device=w.device)
        s_tt, s_at = t.T @ t / len(t), a.T @ t / len(t)
        erase = w @ (s_at - s_tt)  # (out, d)
        plain = erase @ torch.linalg.inv(eye + s_tt)  # the unconstrained edit, for scoring
        if self.filter:
            moved = (r @ plain.T).norm(dim=1)
            r = r[moved > moved.mean()]
        if self.augment:
            v = torch.linalg.svd(w, full_matrices=True).Vh[-1]  # the weakest input direction
            noise = torch.randn(len(r), self.augment, d, generator=g, dtype=w.dtype).to(w.device)
            copies = (r[:, None] + (noise @ v)[..., None] * v).flatten(0, 1)
            moved = (copies @ plain.T).norm(dim=1)
            r = torch.cat([r, copies[moved > moved.mean()]])
        cov = r.T @ r / max(len(r), 1)
        values, vectors = torch.linalg.eigh(cov)
        free = vectors[:, values < self.null_threshold]
        p = free @ free.T
        m = torch.linalg.inv(s_tt @ p + self.retain_scale * eye)
        k = hold
        inner = k.T @ p @ m @ k + self.lamb * torch.eye(k.shape[1], dtype=w.dtype, device=w.device)
        constraint = eye - m @ k @ torch.linalg.pinv(inner) @ k.T @ p
        return erase @ p @ constraint @ m


def kmeans(points: Tensor, k: int, g: torch.Generator, steps: int = 50) -> Tensor:
    """(k, d) centres of Lloyd's k-means from k distinct random points."""
    centres = points[torch.randperm(len(points), generator=g)[:k]].clone()
    for _ in range(steps):
        nearest = torch.cdist(points, centres).argmin(1)
        for j in range(len(centres)):
            if (nearest == j).any():
                centres[j] = points[nearest == j].mean(0)
    return centres


@dataclass(frozen=True)
class RECE(SiteEditor, ClosedForm, name="rece"):
    """RECE (Gong et al., 2024): UCE (its 2023 form), then rounds that find, in closed form, the
    text embedding that best regenerates the erased concept through the edited projections and
    erase that one too:

        c = (μI + Σ_l W_lᵀ W_l)⁻¹ (Σ_l W_lᵀ Ŵ_l) e

    over every edited projection l (W the edited weights, Ŵ the original ones, e every vector of
    the bare concept's context), then UCE's closed form on the current weights with keys c,
    values W·(the bare target's vectors), position for position, and the empty prompt preserved.
    Needs sites that read the text context unchanged (SD-1/2, SD-XL), where one c serves all.

    Attributes:
        sites: see :class:`SiteEditor` (RECE edits ``all``).
        rounds: adversarial rounds after the UCE start.
        mu: μ, the embedding's ridge strength.
        lamb: λ of each round's solve (UCE's start keeps UCE's 0.5).
        erase_scale: weight of each round's erase term.
        preserve_scale: weight of the empty prompt's preserve term in each round.
        preserve: prompts UCE's start preserves (with ""), or an ``*.edit.yaml`` path.
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm`.
    """

    sites: tuple[int, ...] | SiteChoice = "all"
    rounds: int = 3
    mu: float = 0.1
    lamb: float = 0.1
    erase_scale: float = 1.0
    preserve_scale: float = 0.1
    preserve: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "mu", "lamb", "erase_scale", "preserve_scale")
        if self.rounds < 0:
            raise ValueError(f"rounds={self.rounds}: give 0 (UCE alone) or more rounds.")
        resolve_preserve(self)

    @torch.no_grad()
    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        unet = model.denoiser
        chosen = self.site_indices(model)
        found = [sites(unet)[i] for i in chosen]
        reshaped = [
            s.path for s in found if getattr(unet.get_submodule(s.path), "norm_cross", None)
        ]
        projected = getattr(unet, "encoder_hid_proj", None) is not None
        if reshaped or projected or model.family.denoiser != "unet":
            what = reshaped[:2] or ("encoder_hid_proj" if projected else "its caption projection")
            raise ValueError(
                "RECE's closed-form embedding needs sites that read the text context unchanged "
                f"(SD-1/2, SD-XL); this {model.family.name} model projects or normalises it "
                f"first ({what}). Use uce or locoedit on it."
            )
        start = UCE(
            sites=chosen, variant="2023", preserve=self.preserve, solve_dtype=self.solve_dtype,
            keep_empty=self.keep_empty, keep_rtol=self.keep_rtol,
        )  # fmt: skip
        total = start.compute(model, requests)
        names = [f"{s.path}.{s.projection(p)}.weight" for s in found for p in ("k", "v")]
        dtype = getattr(torch, self.solve_dtype)
        original = {n: unet.get_parameter(n).detach().to(dtype) for n in names}
        context = model.encode([r.concept for r in requests] + [r.target for r in requests])
        concept, guide = context.context[: len(requests)], context.context[len(requests) :]
        empty = model.empty().context
        length = concept.shape[1]
        lam = self.lamb / self.erase_scale
        for _ in range(self.rounds):
            with total.applied(model):
                adversarial = self.embedding(model, names, original, concept)
                rows = Regression(
                    adversarial.to(concept.dtype),
                    guide,
                    tuple(tuple((i, i) for i in range(length)) for _ in requests),
                    preserve=empty,
                    keep=empty if self.keep_empty else None,
                )
                step = kv_edit(
                    model, chosen, rows, {"k": lam, "v": lam},
                    self.preserve_scale / self.erase_scale, self.solve_dtype, self.keep_rtol,
                )  # fmt: skip
            total = WeightEdit(
                {n: d + step.deltas[n] for n, d in total.deltas.items()}, total.metadata
            )
        return total

    def embedding(self, model: LocoModel, names, original, concept: Tensor) -> Tensor:
        """(R, T, d) the contexts that the edited projections map closest to where the original
        ones map the concept's."""
        d, dtype = concept.shape[-1], next(iter(original.values())).dtype
        a = self.mu * torch.eye(d, dtype=dtype, device=concept.device)
        b = torch.zeros(d, d, dtype=dtype, device=concept.device)
        for n in names:
            w = model.denoiser.get_parameter(n).detach().to(dtype)
            a, b = a + w.T @ w, b + w.T @ original[n]
        return concept.to(dtype) @ torch.linalg.solve(a, b).T


@dataclass(frozen=True)
class MACE(SiteEditor, ClosedForm, name="mace_cfr"):
    """MACE's closed-form refinement (Lu et al., 2024; stage 1 of 3), every site's ``to_k`` and
    ``to_v``:

        W = (λŴ + Σ Ŵ a oᵀ + s Σ Ŵ p pᵀ)(λI + Σ o oᵀ + s Σ p pᵀ)⁻¹

    with o the concept prompt's vectors at the positions it shares with the target prompt (the
    common start, the common end and the padding after it, shifted to match: the concept's own
    words are left out, since the vectors after them carry it in a causal encoder), a the
    target's vectors there, and p every vector of the preserve prompts (MACE's cached COCO and
    domain priors; without such a cache its configs use λ = 10 to 1000, here 10).

    Attributes:
        sites: see :class:`SiteEditor` (MACE refines ``all``).
        lamb: λ.
        preserve_scale: s.
        preserve: the prior prompts, or an ``*.edit.yaml`` path.
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm`.
    """

    sites: tuple[int, ...] | SiteChoice = "all"
    lamb: float = 10.0
    preserve_scale: float = 1.0
    preserve: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "lamb", "preserve_scale", zero_ok=("preserve_scale",))
        resolve_preserve(self)

    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        pairs = [(s, t) for r in requests for s, _, t in r.pairs()]
        positions = per_segment(
            model.segments,
            lambda tok: [shared_positions(*tok.ids([s, t]), tok.length) for s, t in pairs],
        )
        rows = Regression.of_prompts(
            model, [s for s, _ in pairs], [t for _, t in pairs], positions,
            preserved(self, requests),
            keep_empty=self.keep_empty,
        )  # fmt: skip
        return kv_edit(
            model, self.site_indices(model), rows, {"k": self.lamb, "v": self.lamb},
            self.preserve_scale, self.solve_dtype, self.keep_rtol,
        )  # fmt: skip


def shared_positions(src: list[int], dst: list[int], length: int) -> tuple[tuple[int, int], ...]:
    """MACE's rows: the two id lists' common start and common end (end-of-text included), then
    the padding after each, offset for offset, as far as the shorter reaches."""
    start = 0
    while start < min(len(src), len(dst)) and src[start] == dst[start]:
        start += 1
    tail = 0
    while tail < min(len(src), len(dst)) - start and src[-1 - tail] == dst[-1 - tail]:
        tail += 1
    pairs = [(i, i) for i in range(start)]
    pairs += [(len(src) - tail + k, len(dst) - tail + k) for k in range(tail)]
    pairs += [(len(src) + k, len(dst) + k) for k in range(length - max(len(src), len(dst)))]
    return tuple(pairs)
