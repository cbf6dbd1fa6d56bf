"""The scorers against torchmetrics' own computations and known answers: per-sample CLIP scores
are what ``CLIPScore`` averages, the readers judge rendered scenes exactly, FID is zero between
identical sets and grows with a shift; every one accumulates through update/compute/reset."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torchmetrics.multimodal.clip_score import CLIPScore

from loco_lightning.data.world import AttributeReader
from loco_lightning.data.world.render import Scene, render
from loco_lightning.metrics.clip import SampleCLIPScore, load_clip
from loco_lightning.metrics.fid import ClipImageFeatures, fid_metric
from loco_lightning.metrics.readers import AttributeMatch
from loco_lightning.models.pipeline import packaged

CAPTIONS = ["a red striped circle", "a blue dotted square", "a green filled star"]


def scenes() -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Three canonical world renders in [0, 1] and what they show."""
    shown = [
        {"shape": "circle", "colour": "red", "style": "striped"},
        {"shape": "square", "colour": "blue", "style": "dotted"},
        {"shape": "star", "colour": "green", "style": "filled"},
    ]
    images = np.stack([render(Scene(**s)) for s in shown])  # (3, 16, 16, 3) uint8
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, shown


@pytest.fixture(scope="module")
def worldclip() -> str:
    return packaged("worldclip")


def test_per_sample_clip_scores_are_what_torchmetrics_averages(worldclip):
    images, _ = scenes()
    ours = SampleCLIPScore(worldclip)
    scores = ours.scores(images, CAPTIONS)
    theirs = CLIPScore(model_name_or_path=functools.partial(load_clip, worldclip))
    pixels = (images * 255).round().to(torch.uint8)
    expected = theirs(list(pixels), CAPTIONS)  # torchmetrics' public path, clamped at 0
    assert float(expected) == pytest.approx(max(float(scores.mean()), 0.0), abs=1e-3)
    assert not ours.update_called  # scores() changes no state


def test_clip_score_update_compute_reset(worldclip):
    images, _ = scenes()
    metric = SampleCLIPScore(worldclip)
    scores = metric.scores(images, CAPTIONS)
    metric.update(images[:2], CAPTIONS[:2])
    metric.update(images[2:], CAPTIONS[2:])
    assert float(metric.compute()) == pytest.approx(max(float(scores.mean()), 0.0), abs=1e-4)
    metric.reset()
    assert int(metric.n_samples) == 0
    with pytest.raises(ValueError, match="3 images but 2 captions"):
        metric.scores(images, CAPTIONS[:2])


def test_true_captions_score_above_wrong_ones(worldclip):
    images, _ = scenes()
    metric = SampleCLIPScore(worldclip)
    right = metric.scores(images, CAPTIONS)
    wrong = metric.scores(images, CAPTIONS[1:] + CAPTIONS[:1])
    assert bool((right > wrong).all())


def test_readers_judge_rendered_scenes_exactly():
    images, shown = scenes()
    reader = AttributeReader()
    metric = AttributeMatch(reader, reader.values)
    assert metric.scores(images, shown).tolist() == [1.0, 1.0, 1.0]
    swapped = [{"colour": "blue"}, {"style": "dotted"}, {"shape": "circle"}]
    assert metric.scores(images, swapped).tolist() == [0.0, 1.0, 0.0]
    metric.update(images, shown)
    metric.update(images, swapped)
    assert float(metric.compute()) == pytest.approx(4 / 6)
    metric.reset()
    assert float(metric.total) == 0
    with pytest.raises(KeyError, match="'purple' is not a colour"):
        metric.scores(images[:1], [{"colour": "purple"}])


def test_fid_is_zero_on_identical_sets_and_grows_with_a_shift(worldclip):
    images, _ = scenes()
    batch = images.repeat(4, 1, 1, 1)  # 12 images
    features = ClipImageFeatures(*load_clip(worldclip))
    same, shifted = fid_metric(features), fid_metric(features)
    same.update(batch, real=True)
    same.update(batch, real=False)
    shifted.update(batch, real=True)
    shifted.update(batch.flip(-1).roll(3, -2), real=False)
    assert float(same.compute()) == pytest.approx(0.0, abs=1e-2)
    assert float(shifted.compute()) > 1.0
    with pytest.raises(FileNotFoundError, match="Inception weights"):
        fid_metric(None, "no/such/weights.pth")
