"""The packaged attribute readers are exact on renders and robust to mild degradation."""

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from loco_lightning.data.world import (
    ATTRIBUTES,
    AttributeReader,
    Scene,
    default_vocabulary,
    read_colour,
    render,
)
from loco_lightning.data.world.reader_training import (
    augment,
    reader_accuracy,
    render_batch,
    train_shape_style_net,
)
from loco_lightning.data.world.readers import READER_WEIGHTS


@pytest.fixture(scope="module")
def reader():
    return AttributeReader()


def test_reader_is_exact_on_fresh_renders(reader):
    accuracy = reader_accuracy(reader, n=600, seed=2024)
    assert all(accuracy[a] >= 0.99 for a in ATTRIBUTES), accuracy


def test_reader_is_robust_to_noise_and_blur(reader):
    accuracy = reader_accuracy(reader, n=600, seed=77, noisy=True)
    assert all(accuracy[a] >= 0.97 for a in ATTRIBUTES), accuracy


def test_reader_reads_every_combination_and_upscaled_images(reader):
    vocab = default_vocabulary()
    keys = [(s, c, t) for s in vocab.shapes for c in vocab.colours for t in vocab.styles]
    images = torch.from_numpy(np.stack([render(Scene(*k)) for k in keys])).permute(0, 3, 1, 2)
    images = images.float() / 127.5 - 1
    expected = {
        a: torch.tensor([vocab.index(a, k[i]) for k in keys]) for i, a in enumerate(ATTRIBUTES)
    }
    for x in (images, F.interpolate(images, scale_factor=2, mode="nearest")):
        read = reader(x)
        for a in ATTRIBUTES:
            assert torch.equal(read[a], expected[a]), a


def test_colour_reader_known_answers():
    vocab = default_vocabulary()
    rgb = torch.tensor(vocab.rgb)
    striped = torch.from_numpy(render(Scene("square", "orange", "striped"))).permute(2, 0, 1)
    dim = striped.float() * 0.6 / 127.5 - 1  # a dim generation keeps its hue
    black = -torch.ones(3, 16, 16)
    read = read_colour(torch.stack([striped.float() / 127.5 - 1, dim, black]), rgb)
    assert read[:2].tolist() == [vocab.index("colour", "orange")] * 2
    assert 0 <= read[2] < len(vocab.colours)  # no bright pixel: falls back, does not crash


def test_shipped_weights_record_and_vocabulary_check(tmp_path):
    record = json.loads(READER_WEIGHTS.with_suffix(".json").read_text())
    assert {"command", "seed", "steps"} <= set(record)
    assert record["sha256"] == hashlib.sha256(READER_WEIGHTS.read_bytes()).hexdigest()
    assert all(v >= 0.99 for v in record["accuracy_clean"].values())
    bad = tmp_path / "bad.safetensors"
    save_file(AttributeReader().net.state_dict(), bad, {"shapes": "circle", "styles": "filled"})
    with pytest.raises(ValueError, match="retrain"):
        AttributeReader(weights=bad)


def test_reader_training_is_deterministic():
    nets = [train_shape_style_net(steps=5, batch_size=16, pool_size=64, seed=1) for _ in range(2)]
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        assert torch.equal(a, b), name
    images, _ = render_batch(8, np.random.default_rng(0), default_vocabulary())
    x = augment(images, torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
