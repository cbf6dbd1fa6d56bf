"""On a CUDA device: the edit and the sampler give what they give on the CPU (skipped where there
is no CUDA device; run with ``python -m pytest -m gpu``)."""

from __future__ import annotations

import pytest
import torch

from loco_lightning.editing.published import UCE
from loco_lightning.editing.requests import edit_requests
from loco_lightning.models import load_model
from loco_lightning.models.sampling import denoise

pytestmark = pytest.mark.gpu

PROMPTS = ["a red striped circle", "a blue dotted square"]


@pytest.fixture(scope="module")
def models():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return load_model(source="world-sd1"), load_model(source="world-sd1", device="cuda")


def test_an_edit_solved_on_cuda_equals_the_cpu_one_and_samples_alike(models):
    cpu, gpu = models
    requests = edit_requests("datasets/world/style_striped.edit.yaml")
    on_cpu, on_gpu = UCE().compute(cpu, requests), UCE().compute(gpu, requests)
    for name, delta in on_cpu.deltas.items():
        assert torch.allclose(on_gpu.deltas[name].cpu(), delta, atol=1e-5, rtol=1e-4), name
    with on_cpu.applied(cpu), on_gpu.applied(gpu):
        a = denoise(cpu, cpu.encode(PROMPTS), [0, 1], steps=10)
        b = denoise(gpu, gpu.encode(PROMPTS), [0, 1], steps=10)
    assert (a - b.cpu()).abs().max() < 2e-2
    assert on_gpu.empty_drift(gpu) < 1e-5
