"""The window-grid job: generate, for every window, the image with that window given the target."""

from __future__ import annotations

import lightning as L
from torch import Tensor

from loco_lightning.hooks import sites
from loco_lightning.localization.data import SweepItem
from loco_lightning.localization.generate import generate_items
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import Diffusion


class WindowGenerator(L.LightningModule):
    """Generates a batch of sweep items in one UNet batch, each with its own window.

    Args:
        diffusion: the model and its sampler settings.
        cache_kv: project each site's text keys/values once per generation (exact, faster).
        pooled: also swap the global text path (SD-XL pooled embeds, IF text-time embedding).
    """

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        cache_kv: bool = True,
        pooled: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.diffusion = diffusion
        self.model: LocoModel | None = None

    def setup(self, stage: str) -> None:
        if self.model is None:
            self.model = self.diffusion.load(str(self.device))

    @property
    def n_sites(self) -> int:
        return len(sites(self.model.denoiser))

    def generate(self, items: list[SweepItem], steps: int | None = None) -> Tensor:
        """(B, 3, H, W) images, item b generated with its window given its target prompt
        (``steps``: instead of the sampler's, as the batch-size probe runs)."""
        hp, sampler = self.hparams, self.diffusion.sampler(self.model)
        sampler["steps"] = steps or sampler["steps"]
        return generate_items(self.model, items, cache_kv=hp.cache_kv, pooled=hp.pooled, **sampler)

    def predict_step(self, batch: list[SweepItem], batch_idx: int) -> dict:
        rows = [(it.pair.original, it.pair.target, it.seed) for it in batch]
        return {"rows": rows, "labels": [it.label for it in batch], "images": self.generate(batch)}
