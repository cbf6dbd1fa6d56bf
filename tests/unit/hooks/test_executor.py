"""The executor's known answers: exact windows, batching, reference equivalence, restoration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loco_lightning.hooks import NeuronAblation, PromptSwap, Record, intervene, sites
from tests.helpers import denoiser_inputs

ORIGINAL = ["a red striped circle", "a blue dotted square"]
TARGET = ["a red circle", "a blue square"]


def run(model, prompts, specs=(), cfg=False, seeds=None, **kwargs):
    with torch.no_grad(), intervene(model.denoiser, specs, encode=model.encode, cfg=cfg, **kwargs):
        return model.denoiser(**denoiser_inputs(model, prompts, seeds)).sample


def swaps(model, window, targets=TARGET, pooled=None):
    if pooled is None:  # a non-empty window swaps the whole prompt's global path too
        pooled = model.family.pooled is not None and len(window) > 0
    return [
        PromptSwap(tuple(window), t, samples=(b,), pooled=pooled) for b, t in enumerate(targets)
    ]


def test_empty_window_is_the_original_and_all_sites_the_target(mini):
    with torch.no_grad():
        original = mini.denoiser(**denoiser_inputs(mini, ORIGINAL)).sample
        target = mini.denoiser(**denoiser_inputs(mini, TARGET)).sample
    assert (original - target).abs().max() > 1e-3  # the test can tell the two apart
    n = len(sites(mini.denoiser))
    assert (run(mini, ORIGINAL, swaps(mini, [])) - original).abs().max() <= 1e-6
    assert (run(mini, ORIGINAL, swaps(mini, range(n))) - target).abs().max() <= 1e-6


@pytest.mark.parametrize("family", ["sdxl", "if"])
def test_kv_swap_leaves_the_global_text_path_alone_unless_asked(family):
    from tests.helpers import mini_model

    model = mini_model(family)
    n = len(sites(model.denoiser))
    kv_only = run(model, ORIGINAL, swaps(model, range(n), pooled=False))
    with torch.no_grad():
        target = model.denoiser(**denoiser_inputs(model, TARGET)).sample
    assert (kv_only - target).abs().max() > 1e-4  # the pooled path still carries the original
    # Known answer: target contexts at every site, original global path.
    orig, tgt = model.encode(ORIGINAL), model.encode(TARGET)
    inputs = denoiser_inputs(model, ORIGINAL)
    inputs["encoder_hidden_states"] = tgt.context
    if family == "sdxl":
        inputs["added_cond_kwargs"] = orig.added
        expected = model.denoiser(**inputs).sample
    else:  # IF's text-time embedding reads the context: feed it the original's
        handle = model.denoiser.add_embedding.register_forward_pre_hook(
            lambda m, a: (orig.context, *a[1:])
        )
        try:
            expected = model.denoiser(**inputs).sample
        finally:
            handle.remove()
    assert (kv_only - expected).abs().max() <= 1e-6


@pytest.mark.parametrize("family", ["sd1", "pixart", "sana"])
def test_batched_windows_equal_separate_calls(family):
    """One [uncond; cond] batch with a window per sample equals one call per sample (PixArt,
    SANA: each swapped row also reads its prompt's padding mask)."""
    from tests.helpers import mini_model

    model = mini_model(family)
    n = len(sites(model.denoiser))
    windows = [(), (0,), (1, 2), (n - 1,), tuple(range(n)), (2, 3, 4)]
    originals, targets = ORIGINAL * 3, TARGET * 3
    specs = [PromptSwap(w, t, samples=(b,)) for b, (w, t) in enumerate(zip(windows, targets)) if w]
    k = len(windows)
    seeds = [100 + b for b in range(k)] + list(range(k))
    batched = run(model, [""] * k + originals, specs, cfg=True, seeds=seeds)
    for b, (w, t) in enumerate(zip(windows, targets)):
        single = run(model, [originals[b]], [PromptSwap(w, t)] if w else [], seeds=[b])
        assert (batched[k + b] - single[0]).abs().max() <= 1e-5, (b, w)
        uncond = run(model, [""], seeds=[100 + b])
        assert (batched[b] - uncond[0]).abs().max() <= 1e-5  # the unconditional half is untouched


def test_batched_windows_without_cfg_equal_separate_calls(sd1):
    n = len(sites(sd1.denoiser))
    prompts = ORIGINAL * 2
    targets = TARGET * 2
    windows = [(0,), (5, 6, 7), (n - 1,), tuple(range(n))]
    specs = [PromptSwap(w, t, samples=(b,)) for b, (w, t) in enumerate(zip(windows, targets))]
    batched = run(sd1, prompts, specs)
    for b, (w, t) in enumerate(zip(windows, targets)):
        single = run(sd1, [prompts[b]], [PromptSwap(w, t)], seeds=[b])
        assert (batched[b] - single[0]).abs().max() <= 1e-5


def test_processor_swap_equals_the_reference_scripts_mechanism(sd1):
    """Reference: forward hooks overwrite the conditional half of to_k/to_v outputs."""
    unet = sd1.denoiser
    window = (3, 4, 8)
    target = sd1.encode(["a red circle"]).context
    inputs = denoiser_inputs(sd1, ["", "a red striped circle"])  # [uncond; cond], batch of 2
    handles = []
    for site in sites(unet):
        if site.index not in window:
            continue
        attn = unet.get_submodule(site.path)
        for proj in (attn.to_k, attn.to_v):

            def overwrite(module, args, output):
                output = output.clone()
                output[1:] = F.linear(target, module.weight, module.bias)  # conditional half
                return output

            handles.append(proj.register_forward_hook(overwrite))
    with torch.no_grad():
        try:
            reference = unet(**inputs).sample
        finally:
            for h in handles:
                h.remove()
        ours = run(
            sd1, ["", "a red striped circle"], [PromptSwap(window, "a red circle")], cfg=True
        )
    assert (reference - ours).abs().max() <= 1e-6


def test_exit_restores_processors_and_weights_bit_for_bit(sd1):
    unet = sd1.denoiser
    before = dict(unet.attn_processors)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    specs = [
        PromptSwap((0, 1), "a red circle"),
        NeuronAblation((2,), (0, 1), value=3.0),
        Record((0,), ("k", "output")),
    ]
    with pytest.raises(RuntimeError, match="boom"), intervene(unet, specs, encode=sd1.encode):
        assert all(
            type(p).__name__ == "SiteProcessor"
            for k, p in unet.attn_processors.items()
            if k.endswith("attn2.processor")
        )
        raise RuntimeError("boom")
    after = unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    assert all(torch.equal(weights[k], v) for k, v in unet.state_dict().items())
    assert not unet._forward_pre_hooks


def test_kv_cache_projects_once_per_generation_and_matches(sd1):
    from loco_lightning.models.sampling import denoise

    model = sd1
    cond = model.encode(ORIGINAL)
    specs = [PromptSwap((1, 2), "a red circle", samples=(0,)), NeuronAblation((3,), (0, 5))]
    attn = model.denoiser.get_submodule(sites(model.denoiser)[1].path)
    calls, unet_calls = [], []
    handles = [
        attn.to_k.register_forward_hook(lambda *a: calls.append(1)),
        model.denoiser.register_forward_hook(lambda *a: unet_calls.append(1)),
    ]
    try:
        outs = {}
        for cache in (False, True):
            calls.clear()
            unet_calls.clear()
            with intervene(model.denoiser, specs, encode=model.encode, cache_kv=cache):
                outs[cache] = denoise(model, cond, [0, 1], steps=4, guidance=1.5)
            outs[cache, "calls"], outs[cache, "unet"] = len(calls), len(unet_calls)
    finally:
        for h in handles:
            h.remove()
    # without the cache the text projection runs at every UNet call (PNDM: steps + 1 of them)
    assert outs[False, "calls"] == outs[False, "unet"] >= 4 and outs[True, "calls"] == 1
    assert (outs[True] - outs[False]).abs().max() <= 1e-5


def test_if_added_kv_bias_is_honoured():
    """IF's text keys carry a bias: recorded keys are W x + b, and outputs match diffusers'."""
    from tests.helpers import mini_model

    model = mini_model("if")
    unet = model.denoiser
    site = sites(unet)[3]
    attn = unet.get_submodule(site.path)
    bias = attn.add_k_proj.bias.detach().clone()
    with torch.no_grad():
        attn.add_k_proj.bias.add_(1.0)  # a bias large enough to matter
        try:
            plain = unet(**denoiser_inputs(model, ORIGINAL)).sample
            with intervene(unet, [Record((3,), ("context", "k"))], cfg=False) as trace:
                ours = unet(**denoiser_inputs(model, ORIGINAL)).sample
            ctx = attn.norm_encoder_hidden_states(trace.records[(3, "context")][0])
            expected_k = ctx @ attn.add_k_proj.weight.T + attn.add_k_proj.bias
            assert (trace.records[(3, "k")][0] - expected_k).abs().max() <= 1e-5
            without_bias = ctx @ attn.add_k_proj.weight.T
            assert (trace.records[(3, "k")][0] - without_bias).abs().min() > 0.5
        finally:
            attn.add_k_proj.bias.copy_(bias)
    assert (ours - plain).abs().max() <= 1e-6


def test_neuron_ablation_sets_only_the_chosen_neurons_of_the_chosen_samples(sd1):
    specs = [
        NeuronAblation((2,), (0, 3), projection="k", value=(5.0, -5.0), samples=(1,)),
        Record((2,), ("k", "v")),
    ]
    with torch.no_grad(), intervene(sd1.denoiser, specs, encode=sd1.encode, cfg=False) as trace:
        ablated = sd1.denoiser(**denoiser_inputs(sd1, ORIGINAL)).sample
    with torch.no_grad(), intervene(sd1.denoiser, [Record((2,), ("k",))], cfg=False) as clean:
        plain = sd1.denoiser(**denoiser_inputs(sd1, ORIGINAL)).sample
    k, k0 = trace.records[(2, "k")][0], clean.records[(2, "k")][0]
    assert torch.all(k[1, :, 0] == 5.0) and torch.all(k[1, :, 3] == -5.0)
    assert torch.equal(k[0], k0[0])  # sample 0 untouched
    untouched = [i for i in range(k.shape[-1]) if i not in (0, 3)]
    assert torch.equal(k[1][:, untouched], k0[1][:, untouched])
    assert torch.equal(ablated[0], plain[0]) and (ablated[1] - plain[1]).abs().max() > 1e-5


def test_scaling_neurons_by_one_changes_nothing(sd1):
    scaled = run(sd1, ORIGINAL, [NeuronAblation((0, 5), (0, 1, 2), scale=1.0)])
    plain = run(sd1, ORIGINAL)
    assert torch.equal(scaled, plain)


def test_unknown_site_index_names_the_valid_range_and_paths(sd1):
    match = r"site\(s\) \[16\].*16 cross-attention sites.*attn2"
    spec = PromptSwap((3, 16), "x")
    with pytest.raises(IndexError, match=match), intervene(sd1.denoiser, [spec], encode=sd1.encode):
        pass


def test_context_of_the_wrong_width_is_refused(sd1):
    def wrong(prompts):
        return torch.zeros(len(prompts), 77, 7), None

    spec = PromptSwap((0,), "x")
    with (
        pytest.raises(ValueError, match=r"\(N, T, 32\)"),
        intervene(sd1.denoiser, [spec], encode=wrong),
    ):
        pass


def test_swap_without_encoder_says_how_to_get_one(sd1):
    with (
        pytest.raises(ValueError, match="need an encoder") as err,
        intervene(sd1.denoiser, [PromptSwap((0,), "x")]),
    ):
        pass
    # the fix it names works as written
    assert "encode=model.encode" in str(err.value)
    model = sd1
    with intervene(model.denoiser, [PromptSwap((0,), "x")], encode=model.encode):
        pass


def test_samples_out_of_range_are_refused(sd1):
    with pytest.raises(IndexError, match=r"samples \[5\] out of range.*2 conditional samples"):
        run(sd1, ORIGINAL, [PromptSwap((0,), "a", samples=(5,))])


def test_pooled_swap_on_a_unet_without_global_path_is_refused(sd1):
    with pytest.raises(ValueError, match="UNet2DConditionModel has none .*; drop pooled=True"):
        run(sd1, ORIGINAL, [PromptSwap((0,), "a", pooled=True)])
