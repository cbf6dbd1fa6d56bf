"""Writes an edit run's artifacts: the comparison table and each method's weights."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from loco_lightning.editing.exports import export_lora, export_pipeline, model_card
from loco_lightning.files import (
    clean_temporaries,
    markdown_table,
    write_json,
    write_table,
    write_text,
)


class EditReport(L.Callback):
    """After fitting: ``results.csv/.json/.md`` and, per method, ``<method>.safetensors`` (the
    edit, loadable with ``load_edit``); the first weight edit is exported as a diffusers
    pipeline folder (``edited/``) and as an exact LoRA (``lora/``), each with a model card.

    ``run.json`` says whether the folder is whole: ``incomplete`` from the start of a run (a kill
    or an error leaves it so, over files that may mix this run's and an earlier one's) until
    every file is written, then ``complete`` with the list of files.

    Args:
        export: also export the first weight edit to ``<output_dir>/edited`` and ``/lora``.
        table: the table files' name (``loco attack``: ``robustness``).
    """

    def __init__(self, export: bool = True, table: str = "results") -> None:
        self.export = export
        self.table = table

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
            write_table(table, folder, self.table)
            write_text(folder / f"{self.table}.md", markdown_table(table) + "\n")
            written += [f"{self.table}.{ext}" for ext in ("csv", "json", "md")]
        exported = not self.export
        for name, edit in pl_module.edits.items():
            written.append(edit.save(folder / f"{name.replace('/', '_')}.safetensors").name)
            if not exported and edit.in_weights:
                written += self.exports(pl_module, name, edit, folder)
                exported = True
        status(folder, "complete", written)

    def exports(self, pl_module, name: str, edit, folder: Path) -> list[str]:
        """``edited/`` (the pipeline) and ``lora/`` (the same edit as an exact LoRA), each with a
        model card."""
        model = pl_module.model
        base = pl_module.diffusion.resolved(model)
        command = " ".join(["loco", *sys.argv[1:]])
        card = functools.partial(model_card, base, name, edit, pl_module.table, command)
        with edit.applied(model):
            export_pipeline(model, folder / "edited", card(), base["source"])
        written = ["edited"]
        if not hasattr(model.pipeline, "load_lora_weights"):
            rank_zero_info(
                f"{name}: no LoRA export ({type(model.pipeline).__name__} loads none in "
                "diffusers); edited/ holds the edit."
            )
            return written
        try:
            export_lora(edit, folder / "lora", card(lora=True))
            written.append("lora")
        except ValueError as err:  # a delta a LoRA cannot hold: the pipeline folder has it
            rank_zero_warn(f"{name}: no LoRA export ({err})")
        return written


def status(folder: Path, state: str, files: list[str] | None = None) -> None:
    """``run.json``: whether the run writing ``folder`` finished, and what it wrote."""
    record = {"status": state, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if state == "incomplete":
        record["note"] = (
            "a run is writing here, or stopped before it finished: files may mix its output and "
            "an earlier run's"
        )
    write_json(folder / "run.json", record | ({"files": files} if files is not None else {}))
