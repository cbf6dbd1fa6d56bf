"""Joint attention (SD3; FLUX's double- and single-stream blocks): a window swap reads, at its
blocks, the target prompt's text stream on the same image (a companion row in the batch). What
that guarantees, on the SD3 miniature (24 blocks, SD3.5's normalised queries/keys and image-only
second attention) and the FLUX miniature (19 + 38 blocks, rotary embeddings, packed latents,
guidance as an input). Their sampling equals each pipeline's own: test_sampling.py."""

from __future__ import annotations

import pytest
import torch

from loco_lightning.hooks import PromptSwap, Record, intervene, site_inputs, sites
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.models import load_model
from loco_lightning.models.pipeline import Conditioning
from loco_lightning.models.sampling import denoise, make_scheduler, set_timesteps
from tests.helpers import mini_model

ORIGINAL, TARGET = "a red striped circle", "a red circle"
STEPS = 3


@pytest.fixture(scope="module", params=["sd3", "flux"])
def sd3(request):
    """The joint-attention miniature of each family in turn."""
    return mini_model(request.param)


def generate(model, prompts, seeds, specs=(), cond=None):
    with intervene(model.denoiser, list(specs), encode=model.encode, cfg=model.cfg):
        return denoise(model, cond or model.encode(prompts), seeds, steps=STEPS)


def test_swapping_a_prompt_for_itself_at_every_block_changes_nothing(sd3):
    """The companion machinery is exact: reading the text stream of a companion that is the
    row itself gives the row's own image."""
    n = len(sites(sd3.denoiser))
    plain = generate(sd3, [ORIGINAL], [0])
    same = generate(sd3, [ORIGINAL], [0], [PromptSwap(tuple(range(n)), ORIGINAL)])
    assert (same - plain).abs().max() <= 1e-5


def test_every_block_with_the_pooled_input_gives_the_target_prompts_image(sd3):
    n = len(sites(sd3.denoiser))
    target = generate(sd3, [TARGET], [0])
    swapped = generate(sd3, [ORIGINAL], [0], [PromptSwap(tuple(range(n)), TARGET, pooled=True)])
    assert (swapped - target).abs().max() <= 1e-5
    assert (generate(sd3, [ORIGINAL], [0]) - target).abs().max() > 0.01  # the prompts differ


def test_every_block_without_the_pooled_input_is_the_target_context_with_the_own_pooled(sd3):
    """Pooled paths swap only on request: the window reads the target's text, the modulation
    keeps the original's pooled CLIP."""
    n = len(sites(sd3.denoiser))
    o, t = sd3.encode([ORIGINAL]), sd3.encode([TARGET])
    mixed = Conditioning(t.context, o.added)
    expected = generate(sd3, [], [0], cond=mixed)
    swapped = generate(sd3, [ORIGINAL], [0], [PromptSwap(tuple(range(n)), TARGET)])
    assert (swapped - expected).abs().max() <= 1e-5


def test_windows_batched_equal_one_run_each_and_leave_the_empty_prompt_alone(sd3):
    n = len(sites(sd3.denoiser))
    windows = [(0,), (3, 4, 5), tuple(range(n)), (n - 1,)]
    specs = [PromptSwap(w, TARGET, samples=(b,)) for b, w in enumerate(windows)]
    seeds = list(range(len(windows)))
    batched = generate(sd3, [ORIGINAL] * len(windows), seeds, specs)
    for b, w in enumerate(windows):
        single = generate(sd3, [ORIGINAL], [b], [PromptSwap(w, TARGET)])
        assert (batched[b] - single[0]).abs().max() <= 1e-5, w
    plain = generate(sd3, [ORIGINAL], [1])
    assert (batched[1] - plain[0]).abs().max() > 1e-3  # a three-block window moves the image


def test_records_hold_the_callers_rows_and_site_inputs_refuse(sd3):
    n = len(sites(sd3.denoiser))
    cond = sd3.encode([ORIGINAL, TARGET])
    spec = [PromptSwap(tuple(range(n)), TARGET, samples=(0,)), Record((2,), ("k", "output"))]
    scale = sd3.guidance if sd3.family.guidance_embedded else 1.0  # no unconditional rows
    with intervene(sd3.denoiser, spec, encode=sd3.encode, cfg=False) as trace:
        denoise(sd3, cond, [0, 1], steps=1, guidance=scale)
    [keys], [out] = trace.records[(2, "k")], trace.records[(2, "output")]
    assert keys.shape[0] == out.shape[0] == 2  # no companion rows
    # sample 0 reads its companion's stream: the target's keys on the same image, not sample 1's
    assert (keys[0] - keys[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="joint-attention block"):
        site_inputs(sd3.denoiser, sites(sd3.denoiser)[2], cond.context)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_locoedit_on_a_joint_block_maps_the_concepts_stream_to_the_targets_on_the_same_image(
    family,
):
    """The closed form reads the text stream along the unedited model's sampling runs: at the
    first step of a run (blocks before the edited one unchanged, same noise), the edited block's
    key for the concept's token is the key the target prompt's stream has there on the same
    latents (what a LocoGen window swap puts there), recorded here independently; on SD3 both at
    the concept's CLIP row and at its T5 row, which says the prompt again."""
    from loco_lightning.editing.locoedit import LocoEdit
    from loco_lightning.editing.requests import EditRequest, key_positions

    model = load_model(family, "miniature")  # its own copy: sampling steps are set below
    model.sampling["steps"] = 2  # 2 steps x 2 seeds: 4 rows, fewer than the 16 key dimensions
    source, target = "a red striped circle", "a red dotted circle"
    request = EditRequest("striped", "dotted", ("a red {} circle",), ("a red {} circle",))
    edit = LocoEdit(sites=(2,), lambda_k=1e-6, lambda_v=1e-6, keep_empty=False)
    result = edit.compute(model, [request])
    [pairs] = key_positions(model.segments, request.pairs(), "last_subject")
    assert len(pairs) == len(model.segments) == (2 if family == "sd3" else 1)
    attn = model.denoiser.get_submodule(sites(model.denoiser)[2].path)

    def stream(prompt: str) -> torch.Tensor:  # block 2's text input at the first call, seed 0
        cond = model.encode([prompt])._replace(added=model.encode([source]).added)
        with intervene(model.denoiser, [Record((2,), ("context",))], cfg=False) as trace:
            denoise(model, cond, [0], steps=1, guidance=scale)
        return trace.records[(2, "context")][0][0]

    scale = model.guidance if model.family.guidance_embedded else 1.0  # no unconditional rows

    x, y = stream(source), stream(target)
    a, b = zip(*pairs)
    with torch.no_grad():
        wanted = attn.add_k_proj(y[list(b)])
        before = attn.add_k_proj(x[list(a)])
        with result.applied(model):
            assert torch.equal(stream(source), x)  # the blocks before it are not edited
            after = attn.add_k_proj(x[list(a)])
    assert (after - wanted).abs().max() <= 1e-3 < (before - wanted).abs().max()


def test_contribution_of_text_tokens_at_a_joint_block_equals_the_attention_reference():
    """Zarei et al.'s block score on joint attention: what the tokens' columns of the image
    queries' attention carry, recomputed here from the module's projections (image keys first)."""
    from tests.helpers import denoiser_inputs

    sd3 = mini_model("sd3")
    net, site = sd3.denoiser, sites(sd3.denoiser)[2]
    attn = net.get_submodule(site.path)
    tokens = ((7, 8, 9), (2, 3))
    seen = []
    handle = attn.register_forward_pre_hook(
        lambda m, a, kw: seen.append((kw["hidden_states"], kw["encoder_hidden_states"])),
        with_kwargs=True,
    )
    try:
        with (
            torch.no_grad(),
            intervene(net, [Record((2,), ("contribution",), tokens)], cfg=False) as trace,
        ):
            net(**denoiser_inputs(sd3, [ORIGINAL, TARGET]))
    finally:
        handle.remove()
    [measured] = trace.records[(2, "contribution")]
    [(hidden, context)] = seen

    def heads(x):
        return x.view(x.shape[0], -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

    with torch.no_grad():
        q = attn.norm_q(heads(attn.to_q(hidden)))
        k = torch.cat(
            [
                attn.norm_k(heads(attn.to_k(hidden))),
                attn.norm_added_k(heads(attn.add_k_proj(context))),
            ],
            2,
        )
        v = torch.cat([heads(attn.to_v(hidden)), heads(attn.add_v_proj(context))], 2)
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
        expected = []
        for b, tok in enumerate(tokens):
            cols = [hidden.shape[1] + j for j in tok]
            o = probs[b][:, :, cols] @ v[b][:, cols]  # (h, Q, d)
            o = attn.to_out[0](o.transpose(0, 1).reshape(o.shape[1], -1))
            expected.append(o.norm(dim=-1).mean())
    assert measured.shape == (2,) and measured.min() > 0
    assert torch.allclose(measured, torch.stack(expected), rtol=1e-4), (measured, expected)


def test_closed_form_edits_refuse_flux_single_stream_blocks():
    """Their to_k/to_v project text and image tokens alike: an edit would move the image too."""
    from loco_lightning.editing.locoedit import LocoEdit
    from loco_lightning.editing.requests import EditRequest

    flux = mini_model("flux")
    assert [s.kind for s in sites(flux.denoiser)][18:20] == ["joint", "fused"]
    with pytest.raises(ValueError, match=r"Sites \[19\] are single-stream blocks"):
        LocoEdit(sites=(18, 19), keep_empty=False).compute(flux, [EditRequest("striped", "")])


def test_neuron_ablation_at_a_joint_block_equals_zeroing_its_text_projections(sd3):
    """Known answer: every text key/value neuron of a block set to 0 is that block with its
    add_k_proj/add_v_proj weights and biases zeroed (the image's own keys untouched)."""
    from loco_lightning.hooks import NeuronAblation

    site = sites(sd3.denoiser)[2]
    attn = sd3.denoiser.get_submodule(site.path)
    width = attn.add_k_proj.out_features
    spec = [NeuronAblation((2,), tuple(range(width)), "kv", value=0.0, uncond=True)]
    ablated = generate(sd3, [ORIGINAL], [0], spec)
    saved = {n: p.detach().clone() for n, p in attn.named_parameters() if n.startswith("add_")}
    try:
        with torch.no_grad():
            for proj in (attn.add_k_proj, attn.add_v_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        zeroed = generate(sd3, [ORIGINAL], [0])
    finally:
        with torch.no_grad():
            for n, p in attn.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    assert (ablated - zeroed).abs().max() <= 1e-5
    assert (ablated - generate(sd3, [ORIGINAL], [0])).abs().max() > 1e-4


def test_neuron_scores_at_joint_and_fused_blocks_come_from_sampling_runs(sd3):
    from loco_lightning.editing.neurons import neuron_zscores

    model = load_model(sd3.family.name, "miniature")
    model.sampling["steps"] = 2
    last = len(sites(model.denoiser)) - 1  # SD3: a joint block; FLUX: a single-stream one
    z, mean = neuron_zscores(model, last, [ORIGINAL], [TARGET], "v")
    width = sites(model.denoiser)[last].inner_dim
    assert z.shape == mean.shape == (width,) and torch.isfinite(z).all() and z.abs().max() > 0


def test_an_early_decision_decodes_the_flow_models_clean_prediction(sd3):
    """A flow model predicts v = noise - x0, so after ``stop`` steps the decision is the decoded
    x0 = x_t - sigma_t v, recomputed here from the denoiser's own input and output there."""
    seen = []
    hook = sd3.denoiser.register_forward_hook(
        lambda m, args, kw, out: seen.append((kw["hidden_states"], out.sample)), with_kwargs=True
    )
    scale = sd3.guidance if sd3.family.guidance_embedded else 1.0  # no unconditional rows
    try:
        cond = sd3.encode([ORIGINAL])
        early = denoise(sd3, cond, [0], steps=4, guidance=scale, stop=2)
    finally:
        hook.remove()
    assert len(seen) == 2  # the last two steps were never run
    x, v = seen[-1]
    sched = make_scheduler(sd3)
    set_timesteps(sd3, sched, 4, x)
    x0 = kind_of(sd3.denoiser).unpack(x - sched.sigmas[1] * v, sd3.pipeline)
    vae = sd3.pipeline.vae
    with torch.no_grad():
        decoded = vae.decode(x0 / vae.config.scaling_factor + vae.config.shift_factor).sample
    assert (early - (decoded / 2 + 0.5).clamp(0, 1)).abs().max() <= 1e-5
    full = denoise(sd3, cond, [0], steps=4, guidance=scale)
    assert (early - full).abs().max() > 1e-3  # a different image: the decision came early


def test_editors_in_a_shared_block_read_the_stream_once_and_edit_the_same(monkeypatch):
    """LocoEdit at a window, on every site and at another window, as an edit job runs them:
    inside ``shared_streams`` each site's text stream is read once (the window's, then the
    sites every site adds), each edit equals the one made alone bit for bit, and the third
    edit's time to edit still counts the reading it reused."""
    from loco_lightning.editing import streams
    from loco_lightning.editing.editors import run_editor
    from loco_lightning.editing.locoedit import LocoEdit
    from loco_lightning.editing.requests import EditRequest

    model = load_model("sd3", "miniature")  # its own copy: sampling steps are set below
    model.sampling["steps"] = 2
    request = EditRequest("striped", "dotted", ("a red {} circle",), ("a red {} circle",))
    editors = [LocoEdit(sites=s, keep_empty=False) for s in ((2, 3), "all", (5, 6))]
    alone = [e.compute(model, [request]).deltas for e in editors]
    reads = []
    read = streams._read_streams
    monkeypatch.setattr(
        streams, "_read_streams", lambda *a, **k: reads.append(a[1]) or read(*a, **k)
    )
    with streams.shared_streams():
        shared = [run_editor(e, model, [request]) for e in editors]
        assert streams.reused_seconds() > 0
    every = tuple(s.index for s in sites(model.denoiser) if s.kind == "joint")
    assert reads == [(2, 3), tuple(i for i in every if i not in (2, 3))]  # (5, 6): none
    for edit, deltas in zip(shared, alone):
        assert edit.deltas.keys() == deltas.keys()
        assert all(torch.equal(edit.deltas[k], deltas[k]) for k in deltas)
    assert streams.reused_seconds() == 0.0  # outside the block nothing is reused
    # the third editor reused the others' reading, and its time includes it
    assert shared[2].metadata["seconds"] >= 0.5 * shared[0].metadata["seconds"]
