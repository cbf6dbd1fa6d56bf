"""Writes a module's figures as PNG beside its results and shows them in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from loco_lightning.files import save_figure


class FigureReport(L.Callback):
    """After fitting: every figure of ``pl_module.figures()`` as ``<output_dir>/<name>.png`` and
    under ``<tag>/<name>`` in TensorBoard.

    Args:
        tag: TensorBoard tag prefix.
    """

    def __init__(self, tag: str = "compare") -> None:
        self.tag = tag

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        folder = Path(pl_module.hparams.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, fig in pl_module.figures().items():
            save_figure(fig, folder / f"{name}.png")
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"{self.tag}/{name}", fig, trainer.global_step)
