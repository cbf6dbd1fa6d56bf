"""Writes sweep generations as one image grid: a row per (pair, seed), a column per window."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

from loco_lightning.files import save_figure, write_text
from loco_lightning.grids import labelled_grid

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
        cells = [[row.get(label, blank) for label in labels] for row in self._rows.values()]
        names = [f"{o} -> {t}, seed {s}" for o, t, s in self._rows]
        columns = [label if label != "none" else "none (original)" for label in labels]
        out = Path(getattr(pl_module.hparams, "output_dir", None) or trainer.log_dir or ".")
        save_figure(labelled_grid(cells, names, columns), out / f"{self.name}.png")
        images = torch.stack([cell for row in cells for cell in row])
        mode = "nearest" if self.scale >= 1 else "area"
        images = F.interpolate(images, scale_factor=self.scale, mode=mode)
        grid = make_grid(images, nrow=len(labels), padding=2, pad_value=0.5)  # TensorBoard's
        legend = ["columns: " + " ".join(labels)]
        legend += [f"row {i}: {o!r} -> {t!r}, seed {s}" for i, (o, t, s) in enumerate(self._rows)]
        write_text(out / f"{self.name}.txt", "\n".join(legend) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.name, grid, trainer.global_step)
        log.info("wrote %s", out / f"{self.name}.png")
