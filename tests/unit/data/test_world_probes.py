"""Probe set, caption variants and the world DataModule: fixed, labelled right, resumable."""

from types import SimpleNamespace

import numpy as np
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
    dm.trainer = SimpleNamespace(max_steps=3, global_step=0, lightning_module=None)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 3, 16, 16)
    dm.trainer = SimpleNamespace(max_steps=3, global_step=2, lightning_module=None)
    resumed = list(dm.train_dataloader())
    assert resumed[0]["caption"] == batches[2]["caption"]
    dm.trainer = SimpleNamespace(
        max_steps=1, global_step=0, lightning_module=SimpleNamespace(caption_variants=(("style",),))
    )
    [batch] = list(dm.train_dataloader())
    assert len(batch["variants"]) == 1 and len(batch["variants"][0]) == 4
    val = list(dm.val_dataloader())
    assert sum(len(b["caption"]) for b in val) == 192 + 9
