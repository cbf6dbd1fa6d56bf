"""Training WorldCLIP contrastively on LocoWorld, with a loss that knows which captions fit.

In a batch of world captions many pairs are not negatives: "a red shape" fits every red image,
and two different templates can describe the same image. Standard CLIP loss would push those
apart. Here every caption's target is uniform over the images it describes (and every image's
over the captions that describe it), decided from the labels the dataset carries.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from loco_lightning.data.world import ATTRIBUTES
from loco_lightning.models.world import RECORD_NAME
from loco_lightning.models.worldclip import build_worldclip
from loco_lightning.training.schedules import adamw_warmup_cosine
from loco_lightning.training.world import world_tokenizer

log = logging.getLogger(__name__)

RANK_KEYS = ("rank", *ATTRIBUTES, "artist", "trademark", "country")


def compatible(batch: dict) -> Tensor:
    """(B, B) bool: caption i describes image j (every attribute caption i fixes matches j's)."""
    ok = torch.ones(len(batch["caption"]), len(batch["caption"]), dtype=torch.bool)
    for a in ATTRIBUTES:
        values = batch[a].cpu()
        fixed = ~batch[f"{a}_dropped"].cpu()
        ok &= ~fixed[:, None] | (values[:, None] == values[None, :])
    return ok


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each row of ``logits`` against the uniform distribution over its targets."""
    targets = targets.float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class WorldCLIPModule(L.LightningModule):
    """Trains WorldCLIP; validates by ranking each probe's caption against one-attribute-off ones.

    Args:
        width: hidden width of both towers.
        layers: transformer layers of each tower.
        heads: attention heads of each tower.
        patch_size: image-tower patch side (16-px images: 2 gives 64 patches).
        projection_dim: width of the shared embedding (also the FID feature size).
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up, then cosine decay to 10% at the last step.
    """

    def __init__(
        self,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        patch_size: int = 2,
        projection_dim: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 100,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.clip = None

    def setup(self, stage: str) -> None:
        if self.clip is not None:
            return
        hp = self.hparams
        self.clip = build_worldclip(
            world_tokenizer(),
            hp.width,
            hp.layers,
            hp.heads,
            patch_size=hp.patch_size,
            projection_dim=hp.projection_dim,
        )
        self.ranking = nn.ModuleDict(
            {s: nn.ModuleDict({k: MeanMetric() for k in RANK_KEYS}) for s in ("val", "test")}
        )

    def contrastive_loss(self, batch: dict) -> Tensor:
        """Symmetric CLIP loss whose targets are every caption-image pair that fits (`compatible`).

        Args:
            batch: ``image`` (B, 3, S, S) in [-1, 1], ``caption`` (B,), attribute indices and
                ``<attribute>_dropped`` flags, as `WorldDataset` yields them.
        """
        tokens = self.clip.tokenize(batch["caption"])
        out = self.clip.model(**tokens, pixel_values=batch["image"])
        fits = compatible(batch).to(out.logits_per_text.device)  # (texts, images)
        return 0.5 * (
            soft_cross_entropy(out.logits_per_text, fits)
            + soft_cross_entropy(out.logits_per_image, fits.T)
        )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.contrastive_loss(batch)
        n = len(batch["caption"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/logit_scale", self.clip.model.logit_scale.exp(), batch_size=n)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        steps = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(
            self.clip.parameters(), hp.lr, hp.weight_decay, hp.warmup_steps, steps
        )

    def _evaluate(self, batch: dict, stage: str) -> None:
        alternatives = [
            list(zip(w, t)) for w, t in zip(batch["alternative_of"], batch["alternatives"])
        ]
        images = (batch["image"] + 1.0) / 2.0  # renders in [-1, 1] -> [0, 1]
        results = self.clip.rank(images, batch["caption"], alternatives)
        for key, values in results.items():
            metric = self.ranking[stage][key]
            metric.update(values)
            name = f"{stage}/rank" if key == "rank" else f"{stage}/rank_{key}"
            self.log(name, metric, prog_bar=key == "rank", batch_size=len(values))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def export(self, folder: str | Path, record: dict) -> Path:
        """Write WorldCLIP as a transformers folder (safetensors) plus ``loco_world.json``."""
        folder = Path(folder)
        self.clip.save_pretrained(folder)
        record = {
            **record,
            "parameters": {
                "text_tower": sum(p.numel() for p in self.clip.model.text_model.parameters()),
                "image_tower": sum(p.numel() for p in self.clip.model.vision_model.parameters()),
                "total": sum(p.numel() for p in self.clip.parameters()),
            },
            "module": {k: v for k, v in self.hparams.items() if not k.startswith("_")},
        }
        (folder / RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        log.info("exported WorldCLIP to %s", folder)
        return folder
