"""Writes sweep generations as one image grid: a row per (pair, seed), a column per window."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

log = logging.getLogger(__name__)


class WindowGridWriter(L.Callback):
    """Collects ``{"rows", "labels", "images"}`` predictions; writes ``windows.png`` to the run.

    Args:
        upscale: nearest-neighbour magnification so 16-px world images are visible.
        name: file stem and TensorBoard tag.
    """

    def __init__(self, upscale: int = 4, name: str = "windows") -> None:
        self.upscale = upscale
        self.name = name
        self._rows: dict[tuple, dict[str, torch.Tensor]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        self._rows = {}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        for row, label, image in zip(outputs["rows"], outputs["labels"], outputs["images"].cpu()):
            self._rows.setdefault(row, {})[label] = image

    @rank_zero_only
    def on_predict_end(self, trainer, pl_module) -> None:
        if not self._rows:
            return
        labels = list(next(iter(self._rows.values())))
        images = torch.stack([row[label] for row in self._rows.values() for label in labels])
        images = F.interpolate(images, scale_factor=self.upscale, mode="nearest")
        grid = make_grid(images, nrow=len(labels), padding=2, pad_value=0.5)
        out = Path(trainer.log_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        save_image(grid, out / f"{self.name}.png")
        legend = ["columns: " + " ".join(labels)]
        legend += [f"row {i}: {o!r} -> {t!r}, seed {s}" for i, (o, t, s) in enumerate(self._rows)]
        (out / f"{self.name}.txt").write_text("\n".join(legend) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.name, grid, trainer.global_step)
        log.info("wrote %s", out / f"{self.name}.png")
