"""Writes an edit run's artifacts: the comparison table and each method's weights."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from loco_lightning.editing.edits import export_pipeline
from loco_lightning.editing.evaluation import markdown
from loco_lightning.files import clean_temporaries, write_json, write_table, write_text


class EditReport(L.Callback):
    """After fitting: ``results.csv/.json/.md`` and, per method, ``<method>.safetensors`` (the
    edit, loadable with ``load_edit``); the first weight edit's pipeline is exported as a
    diffusers folder.

    ``run.json`` says whether the folder is whole: ``incomplete`` from the start of a run (a kill
    or an error leaves it so, over files that may mix this run's and an earlier one's) until
    every file is written, then ``complete`` with the list of files.

    Args:
        export: also export the first weight edit's pipeline to ``<output_dir>/edited``.
    """

    def __init__(self, export: bool = True) -> None:
        self.export = export

    @rank_zero_only
    def setup(self, trainer, pl_module, stage: str) -> None:
        clean_temporaries(pl_module.hparams.output_dir)  # a killed run's
        status(Path(pl_module.hparams.output_dir), "incomplete")

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        folder = Path(pl_module.hparams.output_dir)
        written = []
        table = pl_module.table
        if table:
            write_table(table, folder, "results")
            write_text(folder / "results.md", markdown(table) + "\n")
            written += ["results.csv", "results.json", "results.md"]
        exported = not self.export
        for name, edit in pl_module.edits.items():
            written.append(edit.save(folder / f"{name.replace('/', '_')}.safetensors").name)
            if not exported and edit.in_weights:
                with edit.applied(pl_module.model):
                    written.append(export_pipeline(pl_module.model, folder / "edited").name)
                exported = True
        status(folder, "complete", written)


def status(folder: Path, state: str, files: list[str] | None = None) -> None:
    """``run.json``: whether the run writing ``folder`` finished, and what it wrote."""
    record = {"status": state, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if state == "incomplete":
        record["note"] = (
            "a run is writing here, or stopped before it finished: files may mix its output and "
            "an earlier run's"
        )
    write_json(folder / "run.json", record | ({"files": files} if files is not None else {}))
