"""Neuron-level editing: the ranking finds planted neurons; both ablations change outputs."""

from __future__ import annotations

import torch

from loco_lightning.editing.locoedit import site_inputs
from loco_lightning.editing.neurons import neuron_edit, neuron_zscores
from loco_lightning.hooks import NeuronAblation, Record, intervene, sites
from loco_lightning.models.sampling import denoise
from tests.helpers import unet_inputs

CONCEPT = ["a red striped circle", "a blue striped square", "a green striped star"]
NEUTRAL = ["a red circle", "a blue square", "a green star"]


def test_zscore_finds_a_neuron_that_reads_the_concept(sd1):
    s = sites(sd1.unet)[3]
    proj = sd1.unet.get_submodule(s.path).to_k
    z0, _ = neuron_zscores(sd1, 3, CONCEPT, NEUTRAL, "k")
    with torch.no_grad():
        original = proj.weight[5].clone()
        # plant: neuron 5 now reads the direction in which concept inputs differ most
        a = site_inputs(sd1.unet, s, sd1.encode(CONCEPT).context).flatten(0, 1).mean(0)
        b = site_inputs(sd1.unet, s, sd1.encode(NEUTRAL).context).flatten(0, 1).mean(0)
        proj.weight[5] = 50 * (a - b) / (a - b).norm()
        try:
            z, mean = neuron_zscores(sd1, 3, CONCEPT, NEUTRAL, "k")
        finally:
            proj.weight[5] = original
    assert int(z.abs().argmax()) == 5 and z.abs()[5] > z0.abs().max()
    assert mean.shape == (proj.out_features,)


def test_mean_ablation_changes_the_output_and_undoes(sd1):
    model = sd1
    cond = model.encode(CONCEPT)
    plain = denoise(model, cond, [0, 1, 2], steps=2)
    edit = neuron_edit(model, (2, 3), CONCEPT, NEUTRAL, k=4)
    assert len(edit.specs) == 4 and all(isinstance(s, NeuronAblation) for s in edit.specs)
    edit.redo(model.unet)
    try:
        ablated = denoise(model, cond, [0, 1, 2], steps=2)
    finally:
        edit.undo(model.unet)
    assert (ablated - plain).abs().max() > 1e-3  # the reference code's version changed nothing
    assert torch.equal(denoise(model, cond, [0, 1, 2], steps=2), plain)


def test_zeroed_weights_equal_the_executor_setting_those_neurons_to_zero(sd1):
    edit = neuron_edit(sd1, (4,), CONCEPT, NEUTRAL, k=3, projections=("k",), mode="zero")
    [neurons] = edit.metadata["neurons"].values()
    inputs = unet_inputs(sd1, CONCEPT)
    with (
        torch.no_grad(),
        intervene(sd1.unet, [NeuronAblation((4,), tuple(neurons), "k", 0.0)], cfg=False),
    ):
        expected = sd1.unet(**inputs).sample
    edit.redo(sd1.unet)
    try:
        with torch.no_grad(), intervene(sd1.unet, [Record((4,), ("k",))], cfg=False) as trace:
            zeroed = sd1.unet(**inputs).sample
    finally:
        edit.undo(sd1.unet)
    assert torch.all(trace.records[(4, "k")][0][..., neurons] == 0)
    assert (zeroed - expected).abs().max() <= 1e-6
