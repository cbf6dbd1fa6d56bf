"""WorldDataset: deterministic per (seed, index), correct labels, configured mix."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from loco_lightning.data.world import (
    ATTRIBUTES,
    DEFAULT_VOCAB_PATH,
    Scene,
    WorldDataset,
    caption_for,
    default_vocabulary,
    render,
)


def test_item_is_a_pure_function_of_seed_and_index():
    ds = WorldDataset(length=100, seed=3)
    later = ds[57]
    for i in (0, 99, 12):  # other items first: order must not matter
        ds[i]
    again = WorldDataset(length=100, seed=3, vocab=str(DEFAULT_VOCAB_PATH))[57]
    assert torch.equal(later["image"], again["image"])
    assert {k: v for k, v in later.items() if k != "image"} == {
        k: v for k, v in again.items() if k != "image"
    }
    neighbour, other_seed = ds[58], WorldDataset(length=100, seed=4)[57]
    for other in (neighbour, other_seed):
        assert (
            not torch.equal(later["image"], other["image"]) or later["caption"] != other["caption"]
        )


def test_items_are_different_across_indices():
    ds = WorldDataset(length=200, seed=0)
    images = torch.stack([ds[i]["image"] for i in range(200)])
    assert len(torch.unique(images.flatten(1), dim=0)) == 200  # pose jitter makes every image new


def test_item_format_and_labels_match_the_render():
    vocab = default_vocabulary()
    ds = WorldDataset(length=50, seed=1, jitter=0.0)
    for i in range(50):
        item = ds[i]
        image = item["image"]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        scene = Scene(*(vocab.values(a)[item[a]] for a in ATTRIBUTES))
        expected = torch.from_numpy(render(scene)).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.equal(image, expected)


def test_kind_mix_and_named_concepts_are_consistent():
    vocab = default_vocabulary()
    ds = WorldDataset(length=1500, seed=2, named_p=0.3)
    items = [ds[i] for i in range(len(ds))]
    kinds = [it["kind"] for it in items]
    assert abs(kinds.count("plain") / len(items) - 0.7) < 0.04
    for kind in ("artist", "trademark", "country"):
        assert abs(kinds.count(kind) / len(items) - 0.1) < 0.03
    for it in items:
        if it["kind"] == "artist":
            assert vocab.styles[it["style"]] == vocab.artists[it["concept"]]
        elif it["kind"] == "trademark":
            obj = vocab.trademarks[it["concept"]]
            assert (obj.shape, obj.colour, obj.style) == tuple(
                vocab.values(a)[it[a]] for a in ATTRIBUTES
            )
        elif it["kind"] == "country":
            emblem = vocab.countries[it["concept"]].emblem
            assert (vocab.shapes[it["shape"]], vocab.colours[it["colour"]]) == (
                emblem.shape,
                emblem.colour,
            )
            assert vocab.styles[it["style"]] == "filled"
        if it["caption"] and it["concept"]:  # a name is removed exactly with its attribute
            removed = {"artist": "style_dropped", "trademark": "shape_dropped"}.get(it["kind"])
            assert (it["concept"] in it["caption"].split()) != bool(removed and it[removed])


def test_dropped_flags_follow_configuration():
    items = [WorldDataset(length=2000, seed=5, named_p=0.0)[i] for i in range(2000)]
    empty = np.mean([it["caption"] == "" for it in items])
    assert abs(empty - 0.1) < 0.025
    for attribute in ATTRIBUTES:
        rate = np.mean([it[f"{attribute}_dropped"] for it in items])
        assert abs(rate - (0.1 + 0.9 * 0.2)) < 0.035


def test_collates_and_validates():
    batch = next(iter(DataLoader(WorldDataset(length=8), batch_size=8)))
    assert batch["image"].shape == (8, 3, 16, 16) and len(batch["caption"]) == 8
    assert batch["shape"].dtype == torch.int64 and batch["shape_dropped"].dtype == torch.bool
    with pytest.raises(IndexError):
        WorldDataset(length=8)[8]
    with pytest.raises(ValueError, match="drop_p"):
        WorldDataset(drop_p=1.5)


def test_held_out_split_uses_only_held_out_templates():
    vocab = default_vocabulary()
    ds = WorldDataset(length=100, named_p=0.0, drop_p=0.0, empty_p=0.0, held_out=True)
    for item in (ds[i] for i in range(100)):
        scene = Scene(*(vocab.values(a)[item[a]] for a in ATTRIBUTES))
        held_out = {caption_for(scene, t).text() for t in vocab.templates_of("plain", True)}
        assert item["caption"] in held_out
