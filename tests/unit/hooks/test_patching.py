"""Recording and patching whole-module outputs (causal tracing's seam) on a small network."""

import pytest
import torch
from torch import nn

from loco_lightning.hooks.patching import Patch, patch_outputs, record_outputs


class Net(nn.Module):
    """Two layers over (B, T, D) token sequences, the first feeding a residual path."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h) + 0.5 * h


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def test_patching_the_clean_output_of_a_layer_restores_the_clean_result(net):
    clean, corrupted = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    with record_outputs(net, ["a"]) as rec:
        expected = net(clean)
    assert len(rec["a"]) == 1 and rec["a"][0].shape == (2, 3, 4)
    with patch_outputs(net, {"a": [Patch((0, 1), rec["a"])]}, cfg=False):
        restored = net(corrupted)
    assert torch.allclose(restored, expected)
    assert not torch.allclose(net(corrupted), expected)  # hooks are gone after the block


def test_a_patch_reaches_only_its_samples_and_tokens_and_the_conditional_half(net):
    x, clean = torch.randn(4, 3, 4), torch.randn(2, 3, 4)
    with record_outputs(net, ["a"]) as rec:
        net(clean)
    base = net(x)
    # cfg: rows [uncond 0, uncond 1; cond 0, cond 1]; patch conditional sample 1, token 2 only
    with patch_outputs(net, {"a": [Patch((1,), [rec["a"][0][1:2]], tokens=(2,))]}, cfg=True):
        out = net(x)
    changed = (out - base).abs().amax(-1) > 0  # (rows, tokens)
    assert changed.nonzero().tolist() == [[3, 2]]


def test_patching_more_calls_than_were_recorded_says_so(net):
    x = torch.randn(1, 3, 4)
    with record_outputs(net, ["a"]) as rec:
        net(x)
    with (
        patch_outputs(net, {"a": [Patch((0,), rec["a"])]}, cfg=False),
        pytest.raises(IndexError, match="called 2 times but the patch holds 1"),
    ):
        net(x)
        net(x)
