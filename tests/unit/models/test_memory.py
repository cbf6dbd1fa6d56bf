"""Working memory measured by following live tensors, and the batch size chosen from it."""

from __future__ import annotations

import torch

from loco_lightning.models.memory import fit_batch, peak_bytes


def test_peak_counts_tensors_alive_together_once_per_storage():
    def chain():
        a = torch.zeros(1000)  # 4000 bytes
        view = a.view(10, 100)  # the same storage: not counted again
        b = view + 1  # 8000 alive
        del a, view
        return (b * 2).sum()  # b and b * 2 alive together: 8000 again, plus 4 for the sum

    assert peak_bytes(chain) == 8004
    assert peak_bytes(lambda: [torch.ones(250) for _ in range(4)]) == 4000


def test_views_and_in_place_results_of_tensors_made_before_cost_nothing():
    weight = torch.zeros(1000)

    def use():
        transposed = weight.view(10, 100).t()  # as every linear layer does with its weight
        weight.add_(1)
        return transposed.sum()  # the 4-byte result is the only new memory

    assert peak_bytes(use) == 4


def test_the_batch_is_the_largest_whose_memory_fits():
    assert fit_batch(lambda k: 100 + 50 * k, budget=1000, most=64) == 18
    assert fit_batch(lambda k: 100 + 50 * k, budget=1000, most=5) == 5
    assert fit_batch(lambda k: 100 + 50 * k, budget=10, most=64) == 1  # never below one


def test_a_denoiser_batch_needs_more_memory_per_row(sd1):
    from tests.helpers import denoiser_inputs

    def call(k):
        inputs = denoiser_inputs(sd1, ["a red circle"] * k)
        return peak_bytes(lambda: sd1.denoiser(**inputs))

    one, two, four = call(1), call(2), call(4)
    assert 0 < one < two < four and abs((four - two) - 2 * (two - one)) <= 0.25 * (four - two)
