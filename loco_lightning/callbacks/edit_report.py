"""Writes an edit run's artifacts: the comparison table and each method's weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from loco_lightning.editing.edits import export_pipeline
from loco_lightning.editing.evaluation import markdown
from loco_lightning.files import write_table, write_text


class EditReport(L.Callback):
    """After fitting: ``results.csv/.json/.md`` and, per method, ``<method>.safetensors`` (the
    edit, loadable with ``load_edit``); the first weight edit's pipeline is exported as a
    diffusers folder.

    Args:
        export: also export the first weight edit's pipeline to ``<output_dir>/edited``.
    """

    def __init__(self, export: bool = True) -> None:
        self.export = export

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        folder = Path(pl_module.hparams.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        table = pl_module.table
        if table:
            write_table(table, folder, "results")
            write_text(folder / "results.md", markdown(table) + "\n")
        exported = not self.export
        for name, edit in pl_module.edits.items():
            edit.save(folder / f"{name.replace('/', '_')}.safetensors")
            if not exported and edit.in_weights:
                with edit.applied(pl_module.model):
                    export_pipeline(pl_module.model, folder / "edited")
                exported = True
