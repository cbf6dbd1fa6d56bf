"""The renderer is deterministic, fast, and draws every attribute value distinguishably."""

import itertools
import time

import numpy as np
import pytest

from loco_lightning.data.world import Scene, default_vocabulary, render, sample_scene


def test_render_shape_dtype_background_and_determinism():
    scene = Scene("star", "cyan", "dotted", dx=0.05, dy=-0.03, scale=1.04, angle=0.1)
    image = render(scene)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert not image[0, 0].any() and not image[-1, -1].any()  # black background
    np.testing.assert_array_equal(image, render(scene))
    assert render(scene, size=32).shape == (32, 32, 3)


def test_canonical_objects_leave_a_black_border():
    for shape in default_vocabulary().shapes:
        image = render(Scene(shape, "white", "filled"))
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert not border.any(), shape
        assert (image.max(axis=2) > 90).sum() >= 40, shape  # and fill a good part of the image


def test_filled_pixels_carry_the_palette_colour():
    vocab = default_vocabulary()
    for colour, rgb in zip(vocab.colours, vocab.rgb):
        image = render(Scene("square", colour, "filled"))
        assert tuple(image[8, 8]) == rgb


def test_striped_keeps_the_silhouette_at_30_percent():
    striped = render(Scene("square", "white", "striped")).astype(int)
    filled = render(Scene("square", "white", "filled")).astype(int)
    inside = filled[..., 0] == 240
    assert set(np.unique(striped[inside][:, 0])) >= {72, 240}  # 0.3 * 240 and full
    assert (striped[inside][:, 0] >= 72).all()  # no hole inside the silhouette


def test_every_value_renders_distinguishably():
    vocab = default_vocabulary()
    images = {
        key: render(Scene(*key)).astype(int)
        for key in itertools.product(vocab.shapes, vocab.colours, vocab.styles)
    }
    for attribute, position in (("shape", 0), ("colour", 1), ("style", 2)):
        for key, image in images.items():
            for other in vocab.values(attribute):
                if other == key[position]:
                    continue
                changed = list(key)
                changed[position] = other
                diff = np.abs(image - images[tuple(changed)]).max(axis=2)
                assert (diff > 60).sum() >= 3, f"{key} vs {changed} differ in too few pixels"


def test_sample_scene_respects_fixed_values_and_jitter():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, jitter=1.0, shape="heart") for _ in range(200)]
    assert {s.shape for s in scenes} == {"heart"}
    assert max(abs(s.dx) for s in scenes) <= 0.0625 and max(abs(s.angle) for s in scenes) <= 0.14
    canonical = sample_scene(np.random.default_rng(1), jitter=0.0)
    assert (canonical.dx, canonical.dy, canonical.scale, canonical.angle) == (0, 0, 1, 0)


def test_unknown_values_fail_loudly():
    with pytest.raises(ValueError, match="hexagon"):
        render(Scene("hexagon", "red", "filled"))
    with pytest.raises(ValueError, match="wavy"):
        render(Scene("circle", "red", "wavy"))


def test_render_speed():
    scenes = [sample_scene(np.random.default_rng(i)) for i in range(300)]
    start = time.perf_counter()
    for scene in scenes:
        render(scene)
    assert (time.perf_counter() - start) / len(scenes) < 2e-3  # ~0.3 ms measured
