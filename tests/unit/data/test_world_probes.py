"""Probe set, caption variants and the world DataModule: fixed, labelled right, resumable."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from loco_lightning.data.world import (
    ATTRIBUTES,
    AttributeReader,
    Scene,
    WorldDataset,
    caption_for,
    default_vocabulary,
    draw_caption,
    probe_set,
    sample_caption,
)
from loco_lightning.data.world.datamodule import WorldDataModule
from loco_lightning.data.world.probes import collate_probes
from tests.helpers import trainer_stub


def test_probe_set_is_fixed_and_covers_every_combination():
    vocab = default_vocabulary()
    probes = probe_set(per_concept=4)
    again = probe_set(per_concept=4)
    assert [p["caption"] for p in probes] == [p["caption"] for p in again]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(probes, again))
    plain = [p for p in probes if p["kind"] == "plain"]
    combos = {tuple(p[a] for a in ATTRIBUTES) for p in plain}
    assert len(plain) == len(combos) == len(vocab.shapes) * len(vocab.colours) * len(vocab.styles)
    for kind, table in (("artist", vocab.artists), ("trademark", vocab.trademarks)):
        named = [p for p in probes if p["kind"] == kind]
        assert len(named) == 4 * len(table) and {p["concept"] for p in named} == set(table)
    assert len({p["seed"] for p in probes}) == len(probes)
    other = probe_set(per_concept=4, seed=1)
    assert {p["seed"] for p in other}.isdisjoint(p["seed"] for p in probes)


def test_probe_renders_show_their_labels():
    probes = probe_set(per_concept=4)
    read = AttributeReader().read(torch.stack([p["image"] for p in probes]))
    for a in ATTRIBUTES:
        assert torch.equal(read[a], torch.tensor([p[a] for p in probes]))


def test_alternatives_differ_in_exactly_one_slot():
    for probe in probe_set(per_concept=1):
        words = probe["caption"].split()
        assert probe["caption"] not in probe["alternatives"]
        assert len(set(probe["alternatives"])) == len(probe["alternatives"])
        for alt in probe["alternatives"]:
            other = alt.split()
            assert len(other) == len(words)
            assert sum(a != b for a, b in zip(words, other)) == 1


def test_collate_keeps_lists_and_stacks_tensors():
    batch = collate_probes(probe_set(per_concept=1)[:5])
    assert batch["image"].shape == (5, 3, 16, 16) and batch["seed"].dtype == torch.int64
    assert len(batch["alternatives"]) == 5 and isinstance(batch["alternatives"][0], list)


def test_draw_caption_is_the_sampled_caption():
    vocab = default_vocabulary()
    scene = Scene("circle", "red", "striped")
    for seed in range(50):
        text, undetermined = sample_caption(scene, np.random.default_rng(seed), empty_p=0.3)
        caption, drop = draw_caption(scene, np.random.default_rng(seed), empty_p=0.3)
        if caption is None:
            assert text == "" and undetermined == frozenset(ATTRIBUTES)
        else:
            assert text == caption.text(drop) and undetermined == caption.undetermined(drop)
    assert caption_for(scene, vocab.templates_of("plain")[0]).text() == "a red striped circle"


def test_variants_remove_attributes_without_changing_the_stream():
    plain = WorldDataset(length=200, seed=3)
    varied = WorldDataset(length=200, seed=3, variants=[("colour",), ("colour", "style")])
    for i in range(200):
        a, b = plain[i], varied[i]
        assert a["caption"] == b["caption"] and torch.equal(a["image"], b["image"])
        no_colour, bare = b["variants"]
        if not a["caption"]:
            assert no_colour == bare == ""
            continue
        assert default_vocabulary().colours[a["colour"]] not in no_colour.split()
        if b["kind"] == "plain":
            assert default_vocabulary().styles[a["style"]] not in bare.split()
        assert set(bare.split()) <= set(no_colour.split()) <= set(a["caption"].split())


def test_datamodule_serves_one_run_and_resumes_where_it_stopped():
    dm = WorldDataModule(batch_size=4, val_per_concept=1, val_batch_size=50)
    dm.trainer = trainer_stub(max_steps=3)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 3, 16, 16)
    dm.trainer = trainer_stub(max_steps=3, global_step=2)
    resumed = list(dm.train_dataloader())
    assert resumed[0]["caption"] == batches[2]["caption"]
    dm.trainer = trainer_stub(lightning_module=SimpleNamespace(caption_variants=(("style",),)))
    [batch] = list(dm.train_dataloader())
    assert len(batch["variants"]) == 1 and len(batch["variants"][0]) == 4
    val = list(dm.val_dataloader())
    assert sum(len(b["caption"]) for b in val) == 192 + 9


def test_ddp_processes_split_each_step_into_the_one_process_batch():
    dm = WorldDataModule(batch_size=6)
    dm.trainer = trainer_stub(global_step=1)
    [whole] = list(dm.train_dataloader())
    parts = []
    for rank in range(2):
        dm.trainer = trainer_stub(global_step=1, world_size=2, global_rank=rank)
        [part] = list(dm.train_dataloader())
        assert part["image"].shape[0] == 3
        parts.append(part)
    merged = [c for pair in zip(*(p["caption"] for p in parts)) for c in pair]
    assert merged == list(whole["caption"])
    images = torch.stack([p["image"] for p in parts], 1).flatten(0, 1)
    assert torch.equal(images, whole["image"])
    dm.trainer = trainer_stub(world_size=4)
    with pytest.raises(ValueError, match=r"batch_size=6 does not split over 4 processes"):
        dm.train_dataloader()


def test_a_pool_serves_the_streams_first_items_rendered_once(monkeypatch):
    dm = WorldDataModule(batch_size=4, pool=4)
    dm.trainer = trainer_stub(max_steps=3)
    made = []
    render = WorldDataset.__getitem__
    monkeypatch.setattr(WorldDataset, "__getitem__", lambda ds, i: made.append(i) or render(ds, i))
    first, *again = list(dm.train_dataloader())
    assert made == [0, 1, 2, 3]  # three steps, four renders
    for batch in again:
        assert batch["caption"] == first["caption"] and torch.equal(batch["image"], first["image"])
        assert batch["pool_index"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"pool=0 must be a positive number of items"):
        WorldDataModule(pool=0)


def test_ddp_processes_split_the_probes_without_repeating_one():
    dm = WorldDataModule(val_per_concept=1, val_batch_size=500)
    dm.trainer = trainer_stub()
    [whole] = list(dm.val_dataloader())
    shares = []
    for rank in range(2):
        dm.trainer = trainer_stub(world_size=2, global_rank=rank)
        [share] = list(dm.val_dataloader())
        shares.append(share["caption"])
    assert len(whole["caption"]) == 201 and list(map(len, shares)) == [101, 100]
    assert sorted(shares[0] + shares[1]) == sorted(whole["caption"])
