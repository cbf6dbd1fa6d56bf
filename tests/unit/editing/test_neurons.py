"""Neuron-level editing: the ranking finds planted neurons; both ablations change outputs."""

from __future__ import annotations

import torch

from loco_lightning.editing.edits import load_edit
from loco_lightning.editing.neurons import Neurons, neuron_zscores
from loco_lightning.editing.requests import EditRequest
from loco_lightning.hooks import NeuronAblation, Record, intervene, site_inputs, sites
from loco_lightning.models.sampling import denoise
from tests.helpers import denoiser_inputs

CONCEPT = ["a red striped circle", "a blue striped square", "a green striped star"]
NEUTRAL = ["a red circle", "a blue square", "a green star"]
STRIPED = EditRequest("striped", "", ("a red {} circle", "a blue {} square", "a green {} star"))


def test_zscore_finds_a_neuron_that_reads_the_concept(sd1):
    s = sites(sd1.denoiser)[3]
    proj = sd1.denoiser.get_submodule(s.path).to_k
    z0, _ = neuron_zscores(sd1, 3, CONCEPT, NEUTRAL, "k")
    with torch.no_grad():
        original = proj.weight[5].clone()
        # plant: neuron 5 now reads the direction in which concept inputs differ most
        a = site_inputs(sd1.denoiser, s, sd1.encode(CONCEPT).context).flatten(0, 1).mean(0)
        b = site_inputs(sd1.denoiser, s, sd1.encode(NEUTRAL).context).flatten(0, 1).mean(0)
        proj.weight[5] = 50 * (a - b) / (a - b).norm()
        try:
            z, mean = neuron_zscores(sd1, 3, CONCEPT, NEUTRAL, "k")
        finally:
            proj.weight[5] = original
    assert int(z.abs().argmax()) == 5 and z.abs()[5] > z0.abs().max()
    assert mean.shape == (proj.out_features,)


def test_the_request_gives_the_concept_and_concept_free_prompts():
    assert [(s, w) for s, w, _ in STRIPED.pairs()] == list(zip(CONCEPT, NEUTRAL))


def test_mean_ablation_changes_the_output_undoes_and_round_trips(sd1, tmp_path):
    model = sd1
    cond = model.encode(CONCEPT)
    plain = denoise(model, cond, [0, 1, 2], steps=2)
    edit = Neurons(sites=(2, 3), k=4).compute(model, [STRIPED])
    assert len(edit.specs) == 4 and all(isinstance(s, NeuronAblation) for s in edit.specs)
    assert torch.equal(denoise(model, cond, [0, 1, 2], steps=2), plain)  # compute changes nothing
    with edit.applied(model):
        ablated = denoise(model, cond, [0, 1, 2], steps=2)
    assert (ablated - plain).abs().max() > 1e-3  # the reference code's version changed nothing
    assert torch.equal(denoise(model, cond, [0, 1, 2], steps=2), plain)
    assert edit.empty_drift(model) == 0.0  # the unconditional half is never ablated
    loaded = load_edit(edit.save(tmp_path / "neurons.safetensors"))
    assert loaded.specs == edit.specs and loaded.metadata == edit.metadata
    with loaded.applied(model):
        assert torch.equal(denoise(model, cond, [0, 1, 2], steps=2), ablated)


def test_zeroed_weights_equal_the_executor_setting_those_neurons_to_zero(sd1):
    edit = Neurons(sites=(4,), k=3, projections=("k",), mode="zero").compute(sd1, [STRIPED])
    [neurons] = edit.metadata["neurons"].values()
    inputs = denoiser_inputs(sd1, CONCEPT)
    with (
        torch.no_grad(),
        intervene(sd1.denoiser, [NeuronAblation((4,), tuple(neurons), "k", 0.0)], cfg=False),
    ):
        expected = sd1.denoiser(**inputs).sample
    with (
        edit.applied(sd1),
        torch.no_grad(),
        intervene(sd1.denoiser, [Record((4,), ("k",))], cfg=False) as trace,
    ):
        zeroed = sd1.denoiser(**inputs).sample
    assert torch.all(trace.records[(4, "k")][0][..., neurons] == 0)
    assert (zeroed - expected).abs().max() <= 1e-6
