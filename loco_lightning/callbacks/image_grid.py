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

from loco_lightning.files import atomic_path, write_text

log = logging.getLogger(__name__)


class WindowGridWriter(L.Callback):
    """Collects ``{"rows", "labels", "images"}`` predictions; writes ``windows.png`` to the run.

    Args:
        scale: resize factor (nearest-neighbour above 1, so 16-px world images stay crisp).
        max_rows: keep at most this many (pair, seed) rows, so big sweeps stay viewable.
        name: file stem and TensorBoard tag.
    """

    def __init__(self, scale: float = 4.0, max_rows: int = 8, name: str = "windows") -> None:
        self.scale = scale
        self.max_rows = max_rows
        self.name = name
        self._rows: dict[tuple, dict[str, torch.Tensor]] = {}

    def on_predict_start(self, trainer, pl_module) -> None:
        self._rows = {}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not outputs:  # a finished sweep's rerun generates nothing
            return
        for row, label, image in zip(outputs["rows"], outputs["labels"], outputs["images"].cpu()):
            if row in self._rows or len(self._rows) < self.max_rows:
                self._rows.setdefault(row, {})[label] = image

    on_validation_start = on_predict_start
    on_validation_batch_end = on_predict_batch_end

    def on_validation_end(self, trainer, pl_module) -> None:
        self.on_predict_end(trainer, pl_module)

    @rank_zero_only
    def on_predict_end(self, trainer, pl_module) -> None:
        if not self._rows:
            return
        labels = list(dict.fromkeys(label for row in self._rows.values() for label in row))
        blank = torch.zeros_like(next(iter(next(iter(self._rows.values())).values())))
        images = torch.stack(
            [row.get(label, blank) for row in self._rows.values() for label in labels]
        )
        mode = "nearest" if self.scale >= 1 else "area"
        images = F.interpolate(images, scale_factor=self.scale, mode=mode)
        grid = make_grid(images, nrow=len(labels), padding=2, pad_value=0.5)
        out = Path(getattr(pl_module.hparams, "output_dir", None) or trainer.log_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / f"{self.name}.png") as tmp:
            save_image(grid, tmp)
        legend = ["columns: " + " ".join(labels)]
        legend += [f"row {i}: {o!r} -> {t!r}, seed {s}" for i, (o, t, s) in enumerate(self._rows)]
        write_text(out / f"{self.name}.txt", "\n".join(legend) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.name, grid, trainer.global_step)
        log.info("wrote %s", out / f"{self.name}.png")
