"""Writes a localization run's table and figures, and shows the figures in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from loco_lightning.files import save_figure


class SweepReport(L.Callback):
    """After a localization run (LocoGen or causal tracing): the table as CSV and JSON and every
    figure of the module as PNG in its ``output_dir``, and the figures in TensorBoard."""

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module) -> None:
        if not pl_module.table:
            return
        pl_module.write()
        folder = Path(pl_module.hparams.output_dir)
        for name, fig in pl_module.figures().items():
            save_figure(fig, folder / f"{name}.png")
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"localize/{name}", fig)
