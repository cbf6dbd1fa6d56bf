"""TensorBoard grids of the images a module generated during validation."""

from __future__ import annotations

import lightning as L
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid


class SampleGrid(L.Callback):
    """Logs the first validation batch's ``{"images", "captions"}`` outputs as one image grid.

    Loss curves alone say little about a world model; a grid per validation shows when shapes,
    colours and styles appear.

    Args:
        n: images in the grid.
        nrow: images per grid row.
        upscale: nearest-neighbour magnification so 16-px images are visible.
        tag: TensorBoard tag (the captions go under ``<tag>/captions``).
    """

    def __init__(self, n: int = 64, nrow: int = 8, upscale: int = 4, tag: str = "val/samples"):
        self.n, self.nrow, self.upscale, self.tag = n, nrow, upscale, tag

    @rank_zero_only
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict):
            return
        images = outputs["images"][: self.n].detach().float().cpu()
        images = F.interpolate(images, scale_factor=self.upscale, mode="nearest")
        grid = make_grid(images.clamp(0, 1), nrow=self.nrow, padding=2, pad_value=0.5)
        captions = outputs["captions"][: self.n]
        rows = [" | ".join(captions[i : i + self.nrow]) for i in range(0, len(captions), self.nrow)]
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, trainer.global_step)
                text = "\n\n".join(f"row {i}: {r}" for i, r in enumerate(rows))
                logger.experiment.add_text(f"{self.tag}/captions", text, trainer.global_step)
