"""WorldCLIP training: the loss knows which captions fit, and ranking reads alternatives right."""

import lightning as L
import torch
from torch.utils.data import default_collate

from loco_lightning.data.world import WorldDataset, probe_set
from loco_lightning.data.world.datamodule import WorldDataModule
from loco_lightning.data.world.probes import collate_probes
from loco_lightning.training.worldclip import WorldCLIPModule, compatible, soft_cross_entropy


def test_captions_fit_every_image_that_has_their_attributes():
    batch = {
        "caption": ["a red circle", "a red shape", "a blue circle"],
        "shape": torch.tensor([0, 0, 0]),
        "colour": torch.tensor([0, 0, 2]),
        "style": torch.tensor([1, 2, 3]),
        "shape_dropped": torch.tensor([False, True, False]),
        "colour_dropped": torch.tensor([False, False, False]),
        "style_dropped": torch.tensor([True, True, True]),
    }
    assert compatible(batch).tolist() == [
        [True, True, False],
        [True, True, False],
        [False, False, True],
    ]
    logits = torch.tensor([[5.0, 5.0, -5.0]])
    assert soft_cross_entropy(logits, torch.tensor([[True, True, False]])) < 0.7  # ~log 2


def test_a_few_steps_lower_the_contrastive_loss(quick_trainer):
    L.seed_everything(0)
    module = WorldCLIPModule(width=32, layers=1, warmup_steps=2)
    module.setup("fit")
    held = WorldDataset(length=64, seed=5, empty_p=0.0)
    held = default_collate([held[i] for i in range(64)])
    with torch.no_grad():
        before = module.contrastive_loss(held).item()
    trainer = quick_trainer(50)  # the BPE's sub-word names take a few more steps than words did
    trainer.fit(module, WorldDataModule(batch_size=64, empty_p=0.0))
    with torch.no_grad():
        after = module.contrastive_loss(held).item()
    assert after < 0.85 * before, (before, after)


def test_ranking_reports_every_kind_of_alternative():
    module = WorldCLIPModule(width=16, layers=1, heads=2)
    module.setup("validate")
    probes = probe_set(per_concept=1)
    batch = collate_probes([probes[0], probes[-1]])  # a plain probe and a country probe
    alternatives = [list(zip(w, t)) for w, t in zip(batch["alternative_of"], batch["alternatives"])]
    results = module.clip.rank((batch["image"] + 1) / 2, batch["caption"], alternatives)
    assert set(results) == {"rank", "shape", "colour", "style", "country"}
    assert results["rank"].shape == (2,) and results["country"].shape == (1,)
