"""Export the trained model at the end of ``fit``, with a record of how it was made."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

log = logging.getLogger(__name__)


class ExportModel(L.Callback):
    """Calls ``pl_module.export(folder, record)`` when ``fit`` ends (after its last validation).

    The record is what makes a shipped model reproducible and its claims checkable: the command,
    the full LightningCLI config (also copied as ``train_config.yaml``), the seed, steps, wall
    time (all of ``fit`` and the part spent validating), torch threads and processes, and the
    final validation metrics.

    Args:
        dirpath: output folder; None writes ``<log_dir>/model``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self._start = 0.0
        self._validating = 0.0
        self._val_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._validating = 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._validating += time.perf_counter() - self._val_start

    def on_fit_end(self, trainer, pl_module) -> None:
        # every process asks for the log folder (under DDP, rank 0 broadcasts it); one exports
        log_dir = Path(trainer.log_dir or ".")
        folder = Path(self.dirpath) if self.dirpath else log_dir / "model"
        if trainer.is_global_zero:
            self._export(trainer, pl_module, log_dir, folder)
        trainer.strategy.barrier("export")

    def _export(self, trainer, pl_module, log_dir: Path, folder: Path) -> None:
        wall = time.perf_counter() - self._start
        metrics = {
            k: round(float(v), 4)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and v.numel() == 1
        }
        config_file = log_dir / "config.yaml"
        record = {
            "command": " ".join(["loco", *sys.argv[1:]]),  # as `python -m loco_lightning.cli`
            "seed": os.environ.get("PL_GLOBAL_SEED"),
            "steps": trainer.global_step,
            "wall_minutes": round(wall / 60, 2),
            "validation_minutes": round(self._validating / 60, 2),
            "threads": torch.get_num_threads(),
            "processes": trainer.world_size,
            "metrics": metrics,
            "config": yaml.safe_load(config_file.read_text()) if config_file.is_file() else None,
            "data": _public(trainer.datamodule.hparams) if trainer.datamodule is not None else None,
        }
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.export(folder, record)
        if config_file.is_file():  # the resolved YAML, to rerun exactly: --config train_config.yaml
            shutil.copyfile(config_file, folder / "train_config.yaml")
        log.info("exported to %s (%d steps, %.1f min)", folder, trainer.global_step, wall / 60)


def _public(hparams) -> dict:
    """Hyperparameters without LightningCLI's private entries (``_instantiator``)."""
    return {k: v for k, v in dict(hparams).items() if not k.startswith("_")}
