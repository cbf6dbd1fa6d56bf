"""The published editors against their update written out from the papers' formulas (NumPy,
explicit inverses, token positions found from the attention mask), and the empty prompt kept by
every closed-form editor."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from loco_lightning.editing.editors import registry, run_editor
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.published import (
    MACE,
    RECE,
    SPEED,
    TIME,
    UCE,
    UCEEmbedder,
    greedy_match,
    shared_positions,
)
from loco_lightning.editing.quickfix import QuickFix
from loco_lightning.editing.requests import EditRequest, edit_requests
from loco_lightning.hooks import site_inputs, sites
from loco_lightning.models import load_model
from tests.helpers import mini_model
from tests.helpers import survival as concept_survival

STYLE = EditRequest("Van Gogh", "a painting", ("{}", "a painting in the style of {}"))
MONET = EditRequest("Monet", "a painting", ("a garden in the style of {}",))
KEEP = ("a picture of a blue square", "a green triangle")  # words the world knows


def vectors(model, site, prompts: list[str]) -> torch.Tensor:
    """(N, T, d) float64 inputs of a site's projections."""
    context = model.encode(prompts).context
    return site_inputs(model.denoiser, model_site(model, site), context).double()


def model_site(model, index):
    return sites(model.denoiser)[index]


def ends(model, prompts: list[str]) -> list[int]:
    """UCE's ``attention_mask.sum() - 2`` per prompt."""
    tok = model.pipeline.tokenizer
    mask = tok(prompts, padding="max_length", max_length=tok.model_max_length).attention_mask
    return [int(sum(m)) - 2 for m in mask]


def solve(w, keys, values, lam, preserve=None, scale=1.0):
    """(λŴ + Σ Ŵ v cᵀ + s Σ Ŵ p pᵀ)(λI + Σ c cᵀ + s Σ p pᵀ)⁻¹ with an explicit inverse."""
    d = w.shape[1]
    left, right = lam * w + w @ values.T @ keys, lam * np.eye(d) + keys.T @ keys
    if preserve is not None:
        kept = preserve.T @ preserve
        left, right = left + scale * w @ kept, right + scale * kept
    return left @ np.linalg.inv(right)


def edited(model, edit, site, proj: str) -> np.ndarray:
    s = model_site(model, site)
    name = f"{s.path}.{s.projection(proj)}.weight"
    w = model.denoiser.get_parameter(name).detach().double()
    return (w + edit.deltas[name].double()).numpy()


def original(model, site, proj: str) -> np.ndarray:
    s = model_site(model, site)
    return model.denoiser.get_parameter(f"{s.path}.{s.projection(proj)}.weight").detach().double()


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_uce_is_its_published_update_with_its_scales(family):
    model = mini_model(family)
    lamb, erase, keep = 0.5, 2.0, 0.7
    edit = UCE(lamb=lamb, erase_scale=erase, preserve_scale=keep, preserve=KEEP, keep_empty=False)
    result = edit.compute(model, [STYLE, MONET])
    sources = [s for r in (STYLE, MONET) for s, _, _ in r.pairs()]
    guides = [t for r in (STYLE, MONET) for _, _, t in r.pairs()]
    for site in (0, len(sites(model.denoiser)) - 1):
        c = vectors(model, site, sources)[list(range(len(sources))), ends(model, sources)].numpy()
        g = vectors(model, site, guides)[list(range(len(guides))), ends(model, guides)].numpy()
        p = vectors(model, site, list(KEEP))[[0, 1], ends(model, list(KEEP))].numpy()
        for proj in ("k", "v"):
            w = original(model, site, proj).numpy()
            # UCE's own form: erase scale on the concept terms, preserve scale on the kept ones
            d = w.shape[1]
            left = lamb * w + erase * w @ g.T @ c + keep * w @ p.T @ p
            right = lamb * np.eye(d) + erase * c.T @ c + keep * p.T @ p
            expected = left @ np.linalg.inv(right)
            got = edited(model, result, site, proj)
            assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
    assert len(result.deltas) == 2 * len(sites(model.denoiser))  # every site's to_k and to_v


def test_uce_2023_aligns_the_tails_and_always_preserves_the_empty_prompt(sd1):
    result = UCE(variant="2023", preserve=KEEP, keep_empty=False).compute(sd1, [STYLE])
    sources = [s for s, _, _ in STYLE.pairs()]
    guides = [t for _, _, t in STYLE.pairs()]
    length = sd1.pipeline.tokenizer.model_max_length
    retain = ["", *KEEP]
    site = 3
    xs, ys = vectors(sd1, site, sources), vectors(sd1, site, guides)
    keys, values = [], []
    for i, (fo, fn) in enumerate(zip(ends(sd1, sources), ends(sd1, guides))):
        top = max(fo, fn)
        keys.append(xs[i, fo : length - (top - fo)])
        values.append(ys[i, fn : length - (top - fn)])
    c, v = torch.cat(keys).numpy(), torch.cat(values).numpy()
    p = vectors(sd1, site, retain).flatten(0, 1).numpy()  # every position of each
    for proj in ("k", "v"):
        w = original(sd1, site, proj).numpy()
        expected = solve(w, c, v, 0.5, p, max(0.1, 1 / len(retain)))
        assert np.abs(edited(sd1, result, site, proj) - expected).max() < 2e-4


# the tokenizers whose rows make each diffusion transformer's context, with their first row
CAPTION_ROWS = {"sd3": (("tokenizer", 0), ("tokenizer_3", 77)), "flux": (("tokenizer_2", 0),)}


def caption_ends(model, family: str, prompts: list[str]) -> list[list[int]]:
    """Per prompt, the context rows of each text encoder's last token before its end-of-text,
    as UCE's FLUX code finds it (``attention_mask.sum() - 2``; T5 has no start token)."""
    rows = []
    for name, start in CAPTION_ROWS[family]:
        tok = getattr(model.pipeline, name)
        mask = tok(prompts, padding="max_length", max_length=77, truncation=True).attention_mask
        rows.append([start + int(sum(m)) - 2 for m in mask])
    return [list(r) for r in zip(*rows)]


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_uce_embedder_is_uces_transformer_update_with_its_scales(family):
    """UCE's closed form on context_embedder (rows: the concept's last token in each encoder's
    rows) and on the pooled projection (the pooled vectors), the empty prompt left free."""
    model = mini_model(family)
    lamb, erase, keep = 0.5, 2.0, 0.7
    requests = [EditRequest("Van Gogh", "a painting"), EditRequest("Monet", "a garden")]
    editor = UCEEmbedder(
        lamb=lamb, erase_scale=erase, preserve_scale=keep, preserve=KEEP, keep_empty=False
    )
    result = editor.compute(model, requests)
    sources, guides, kept = ["Van Gogh", "Monet"], ["a painting", "a garden"], list(KEEP)

    def at_ends(prompts):
        enc = model.encode(prompts)
        ctx = enc.context.detach().double()
        rows = [
            ctx[i, at] for i, ends in enumerate(caption_ends(model, family, prompts)) for at in ends
        ]
        return torch.stack(rows).numpy(), enc.added["pooled_projections"].detach().double().numpy()

    (c, c_pool), (g, g_pool), (p, p_pool) = at_ends(sources), at_ends(guides), at_ends(kept)
    net = model.denoiser
    for name, (cc, gg, pp) in {
        "context_embedder.weight": (c, g, p),
        "time_text_embed.text_embedder.linear_1.weight": (c_pool, g_pool, p_pool),
    }.items():
        w = net.get_parameter(name).detach().double().numpy()
        d = w.shape[1]
        left = lamb * w + erase * w @ gg.T @ cc + keep * w @ pp.T @ pp
        right = lamb * np.eye(d) + erase * cc.T @ cc + keep * pp.T @ pp
        expected = left @ np.linalg.inv(right)
        got = w + result.deltas[name].double().numpy()
        assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max(), name
    assert set(result.deltas) == {
        "context_embedder.weight", "time_text_embed.text_embedder.linear_1.weight"
    }  # fmt: skip
    alone = replace(editor, pooled=False).compute(model, requests)  # the caption rows alone
    assert set(alone.deltas) == {"context_embedder.weight"}
    name = "context_embedder.weight"
    assert torch.equal(alone.deltas[name], result.deltas[name])


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_uce_embedder_keeps_the_empty_caption(family):
    """The miniatures' empty caption spans every input direction of context_embedder but the
    weakest (154 rows of width 32), so the kept edit has little room there: the world tests show
    what it moves."""
    model = mini_model(family)
    request = EditRequest("Van Gogh", "a painting", ("{}", "a garden in the style of {}"))
    layer, empty = model.denoiser.context_embedder, model.empty().context
    edit = UCEEmbedder(key_tokens="aligned").compute(model, [request])
    before = layer(empty).detach()
    with edit.applied(model):
        after = layer(empty).detach()
    assert (after - before).norm() <= 1e-3 * before.norm()
    assert edit.empty_drift(model) <= 1e-3  # at every block's text keys and values
    free = UCEEmbedder(key_tokens="aligned", keep_empty=False).compute(model, [request])
    assert free.empty_drift(model) > 0.1


def test_uce_embedder_refuses_a_model_without_a_context_embedder(sd1):
    with pytest.raises(ValueError, match="context_embedder.*use uce there"):
        UCEEmbedder().compute(sd1, [STYLE])


def time_alignment(src: list[int], dst: list[int], length: int) -> list[int]:
    """TIME's walk, as its code does it (every source token is in the destination, in order)."""
    out, j = [], 0
    for token in src:
        while dst[j] != token:
            j += 1
        out.append(j)
        j += 1
    while len(out) < length:
        out.append(min(j, length - 1))
        j += 1
    return out


def test_time_is_its_published_update_over_every_position_and_augmentation(sd1):
    roses = EditRequest("roses", "blue roses", ("a pack of {}",), ("a pack of {}",))
    result = TIME(keep_empty=False).compute(sd1, [roses])
    tok = sd1.pipeline.tokenizer
    base = [("a pack of roses", "a pack of blue roses")]
    pairs = base + [(a + s, a + t) for a in ("A photo of ", "An image of ", "A picture of ")
                    for s, t in base]  # fmt: skip
    length = tok.model_max_length
    site = 2
    keys, values = [], []
    for s, t in pairs:
        where = time_alignment(tok(s).input_ids, tok(t).input_ids, length)
        keys.append(vectors(sd1, site, [s])[0])
        values.append(vectors(sd1, site, [t])[0][where])
    c, v = torch.cat(keys).numpy(), torch.cat(values).numpy()
    w = original(sd1, site, "v").numpy()
    expected = solve(w, c, v, 0.1)
    assert np.abs(edited(sd1, result, site, "v") - expected).max() < 1e-4 * np.abs(expected).max()
    assert not [n for n in result.deltas if n.endswith("to_k.weight")]  # to_v only by default
    with_k = TIME(with_to_k=True, keep_empty=False).compute(sd1, [roses])
    assert [n for n in with_k.deltas if n.endswith("to_k.weight")]


def test_time_alignment_where_its_code_has_no_answer():
    # a source token missing from the destination goes to the next unmatched position
    assert greedy_match([0, 5, 6, 1], [0, 6, 1], 7) == (
        (0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5),
    )  # fmt: skip
    assert greedy_match([0, 1], [0, 7, 8, 9, 1], 4)[-1] == (3, 4 - 1)  # padding clipped


def test_several_concepts_are_one_solve_and_each_is_remapped(sd1):
    result = run_editor(UCE(lamb=1e-6, keep_empty=False), sd1, [STYLE, MONET])
    assert len(result.metadata["requests"]) == 2 and result.metadata["editor"] == "uce"
    site = 4
    for request in (STYLE, MONET):
        for s, _, t in request.pairs():
            c = vectors(sd1, site, [s])[0, ends(sd1, [s])[0]]
            g = vectors(sd1, site, [t])[0, ends(sd1, [t])[0]]
            w = original(sd1, site, "v")
            got = torch.from_numpy(edited(sd1, result, site, "v")) @ c
            assert torch.allclose(got, w @ g, atol=1e-3 * (w @ g).abs().max())


def test_the_solve_runs_under_a_float64_default_dtype(sd1):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for editor in (LocoEdit(sites=(1,), keep_empty=False), UCE(keep_empty=False)):
            edit = editor.compute(sd1, [STYLE])
            assert all(torch.isfinite(d).all() for d in edit.deltas.values())
    finally:
        torch.set_default_dtype(previous)


def test_every_editor_is_registered_by_its_name():
    editors = registry()
    assert set(editors) == {
        "locoedit", "uce", "uce_embedder", "time", "speed", "rece", "mace_cfr", "quickfix",
        "neurons", "saved",
    }  # fmt: skip
    assert editors["uce"] is UCE and editors["time"] is TIME


@pytest.fixture(scope="module")
def world():
    return load_model(source="world-sd1")


WORLD_EDITORS = {
    "locoedit_all": LocoEdit(sites="all", lambda_k=0.5, lambda_v=0.5, key_tokens="aligned"),
    "uce": UCE(),
    "time": TIME(augmentations=("A picture of ",)),
    "quickfix": QuickFix(lam=0.5, key_tokens="aligned"),
    "speed": SPEED(),
    "rece": RECE(rounds=1),
    "mace_cfr": MACE(),
}
# measured on the striped style: left free, the empty prompt's keys/values move by 15 %
# (locoedit_all), 202 % (uce), 35 % (time), 14 % (quickfix), 2.4 % (speed, which holds its start
# token and three centres), 28 % (rece), 14 % (mace_cfr); kept, by < 1e-6 for every one.


@pytest.mark.parametrize("name", sorted(WORLD_EDITORS))
def test_every_closed_form_editor_keeps_the_empty_prompt_by_default(world, name):
    requests = edit_requests("datasets/world/style_striped.edit.yaml")
    editor = WORLD_EDITORS[name]
    assert editor.keep_empty  # the default
    kept = editor.compute(world, requests)
    assert kept.empty_drift(world) <= 1e-5
    assert any(d.abs().max() > 1e-4 for d in kept.deltas.values())  # and it still edits
    free = replace(editor, keep_empty=False).compute(world, requests)
    assert free.empty_drift(world) > 0.01


def test_speed_is_its_published_update_and_holds_what_it_must(world):
    requests = edit_requests("datasets/world/style_striped.edit.yaml")
    preserve = UCE(preserve="datasets/world/style_striped.edit.yaml").preserve
    editor = SPEED(preserve=preserve, filter=False, augment=0)
    result = editor.compute(world, requests)
    pairs = [(s, t) for r in requests for s, _, t in r.pairs()]
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    site = 1
    t = vectors(world, site, sources)[list(range(len(pairs))), ends(world, sources)].numpy()
    a = vectors(world, site, targets)[list(range(len(pairs))), ends(world, targets)].numpy()
    keep = list(preserve)
    r = vectors(world, site, keep)[list(range(len(keep))), ends(world, keep)].numpy()
    empty = vectors(world, site, [""])[0].numpy()
    w = original(world, site, "v").numpy()
    d = w.shape[1]
    s_tt, s_at = t.T @ t / len(t), a.T @ t / len(t)
    values, vecs = np.linalg.eigh(r.T @ r / len(r))
    p = vecs[:, values < 0.1] @ vecs[:, values < 0.1].T
    _, sv, vh = np.linalg.svd(empty, full_matrices=False)
    k = vh[sv > 1e-4 * sv.max()].T
    m = np.linalg.inv(s_tt @ p + np.eye(d))
    inner = np.linalg.pinv(k.T @ p @ m @ k)
    expected = w + w @ (s_at - s_tt) @ p @ (np.eye(d) - m @ k @ inner @ k.T @ p) @ m
    got = edited(world, result, site, "v")
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()
    delta = got - w
    assert np.abs(delta @ k).max() < 1e-6 * np.abs(delta).max()  # held (to float32 storage)
    assert np.abs(delta @ (np.eye(d) - p)).max() < 1e-6 * np.abs(delta).max()  # retained
    assert not [n for n in result.deltas if n.endswith("to_k.weight")]  # to_v by default
    # with its filter and perturbed copies the update still holds the empty prompt
    assert SPEED(preserve=preserve).compute(world, requests).empty_drift(world) < 1e-5


def test_rece_erases_the_embedding_that_regenerates_the_concept_after_uce(sd1):
    result = RECE(rounds=1, keep_empty=False).compute(sd1, [STYLE])
    start = UCE(variant="2023", keep_empty=False).compute(sd1, [STYLE])
    names = [f"{s.path}.{s.projection(p)}.weight" for s in sites(sd1.denoiser) for p in ("k", "v")]
    w0 = {k: sd1.denoiser.get_parameter(k).detach().double().numpy() for k in names}
    w1 = {k: w0[k] + start.deltas[k].double().numpy() for k in names}
    e = sd1.encode([STYLE.concept]).context[0].double().numpy()  # (T, d)
    g = sd1.encode([STYLE.target]).context[0].double().numpy()
    empty = sd1.encode([""]).context[0].double().numpy()
    d = e.shape[1]
    # the embedding as one stacked least-squares problem per position
    lhs = np.vstack([w1[k] for k in names] + [np.sqrt(0.1) * np.eye(d)])
    rhs = np.vstack([w0[k] @ e.T for k in names] + [np.zeros((d, len(e)))])
    c = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T  # (T, d)
    for name in names[:4]:
        w = w1[name]
        left = 0.1 * w + w @ g.T @ c + 0.1 * w @ empty.T @ empty
        right = 0.1 * np.eye(d) + c.T @ c + 0.1 * empty.T @ empty
        expected = left @ np.linalg.inv(right)
        got = w0[name] + result.deltas[name].double().numpy()
        assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()


def test_rece_refuses_sites_that_reshape_the_text_context():
    with pytest.raises(ValueError, match="RECE's closed-form embedding needs sites"):
        RECE(rounds=1, keep_empty=False).compute(mini_model("if"), [STYLE])


def test_mace_remaps_the_shared_positions_with_its_prior(world):
    tok = world.pipeline.tokenizer
    src, dst = "a picture of a striped red circle", "a picture of a red circle"
    assert shared_positions(tok(src).input_ids, tok(dst).input_ids, 16) == (
        (0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (6, 5), (7, 6), (8, 7),
        (9, 8), (10, 9), (11, 10), (12, 11), (13, 12), (14, 13), (15, 14),
    )  # fmt: skip
    request = EditRequest(
        "striped", "", ("a picture of a {} red circle",), ("a picture of a red circle",)
    )
    result = MACE(preserve=KEEP, keep_empty=False).compute(world, [request])
    pos = shared_positions(tok(src).input_ids, tok(dst).input_ids, tok.model_max_length)
    site = 2
    o = vectors(world, site, [src])[0, [i for i, _ in pos]].numpy()
    a = vectors(world, site, [dst])[0, [j for _, j in pos]].numpy()
    p = vectors(world, site, list(KEEP)).flatten(0, 1).numpy()
    for proj in ("k", "v"):
        w = original(world, site, proj).numpy()
        expected = solve(w, o, a, 10.0, p, 1.0)
        got = edited(world, result, site, proj)
        assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


@pytest.fixture(scope="module")
def two_concepts(world):
    """The striped style and the circle shape in one request list, and each one's survival
    (exact readers, 12 efficacy prompts)."""
    names = ("style_striped", "shape_circle")
    requests = [r for n in names for r in edit_requests(f"datasets/world/{n}.edit.yaml")]

    def survival() -> dict[str, float]:
        return {n: concept_survival(world, n) for n in names}

    return requests, survival, survival()


@pytest.mark.parametrize("name", sorted(WORLD_EDITORS))
def test_several_concepts_in_one_solve_for_every_editor(world, two_concepts, name):
    """Measured (unedited 1.0 / 1.0): striped / circle survive 0.50 / 0.33 (locoedit_all), 0.42 /
    0.17 (uce), 0.58 / 0.25 (time), 0.50 / 0.50 (quickfix), 0.92 / 0.92 (speed), 0.33 / 0.33
    (rece), 0.50 / 0.42 (mace_cfr). SPEED's statistics are means over every (concept, template)
    pair, as in its code, so one solve for two concepts gives each about half the weight that its
    own solve does (each alone: 0.58 / 0.58); on this 64-wide world its joint solve moved 2 of 24
    images here, 6 on the world before this one, 1 on another retrain of the recipe. So it is held
    to moving one image, the others to a summed drop of 0.2 (three images)."""
    requests, survival, unedited = two_concepts
    editor = WORLD_EDITORS[name]
    both = run_editor(editor, world, requests)
    assert len(both.metadata["requests"]) == 2
    first = editor.compute(world, requests[:1])
    assert any(not torch.equal(both.deltas[k], first.deltas[k]) for k in first.deltas)
    with both.applied(world):
        after = survival()
    assert all(after[n] <= unedited[n] for n in after), after
    least = 1 / 12 if name == "speed" else 0.2  # one image (of 12 per concept) for SPEED
    assert sum(unedited.values()) - sum(after.values()) >= least - 1e-6, after
