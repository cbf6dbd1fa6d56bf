"""The report callbacks on stand-in trainers: what each writes, and what it shows TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure

from loco_lightning.callbacks.edit_report import EditReport
from loco_lightning.callbacks.figure_report import FigureReport
from loco_lightning.callbacks.image_grid import WindowGridWriter
from loco_lightning.callbacks.samples import SampleGrid
from loco_lightning.callbacks.sweep_report import SweepReport
from loco_lightning.editing.edits import load_edit
from loco_lightning.editing.exports import export_pipeline
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.neurons import Neurons
from loco_lightning.editing.requests import EditRequest
from loco_lightning.models.diffusion import Diffusion

STRIPED = EditRequest("striped", "", ("a red {} circle", "a blue {} square"))
TABLE = [{"method": "unedited", "group": "efficacy", "n": 2, "clip": 30.0}]


def trainer(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb", name="run")
    return SimpleNamespace(loggers=[logger], global_step=3, sanity_checking=False, log_dir=None)


def events(tmp_path) -> list:
    return list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def test_edit_report_writes_the_table_every_edit_and_the_first_weight_edit_exported(sd1, tmp_path):
    edits = {
        "neurons/k=2": Neurons(sites=(2,), k=2).compute(sd1, [STRIPED]),
        "locoedit": LocoEdit(sites=(1, 2), keep_empty=False).compute(sd1, [STRIPED]),
    }
    before = {k: v.clone() for k, v in sd1.denoiser.state_dict().items()}
    module = SimpleNamespace(
        hparams=SimpleNamespace(output_dir=str(tmp_path / "out")),
        table=TABLE,
        edits=edits,
        model=sd1,
        diffusion=Diffusion(family="sd1", source="miniature"),
    )
    EditReport().setup(trainer(tmp_path), module, "fit")
    out = tmp_path / "out"
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"
    EditReport().on_fit_end(trainer(tmp_path), module)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["files"] == [
        "results.csv", "results.json", "results.md", "neurons_k=2.safetensors",
        "locoedit.safetensors", "edited", "lora",
    ]  # fmt: skip
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists()
    assert "base_model: miniature" in (out / "lora" / "README.md").read_text()
    assert json.loads((out / "results.json").read_text()) == TABLE
    assert (out / "results.csv").read_text().splitlines()[0] == "method,group,n,clip"
    assert "| unedited | efficacy | 2 | 30.000 |" in (out / "results.md").read_text()
    assert load_edit(out / "neurons_k=2.safetensors").specs == edits["neurons/k=2"].specs
    saved = load_edit(out / "locoedit.safetensors")
    assert all(torch.equal(saved.deltas[k], v) for k, v in edits["locoedit"].deltas.items())
    # the exported pipeline is the LocoEdit one (the activation edit is not a weight edit) ...
    exported = json.loads((out / "edited" / "model_index.json").read_text())
    assert exported["unet"] == ["diffusers", "UNet2DConditionModel"]
    # ... and the model is left as it was
    assert all(torch.equal(v, before[k]) for k, v in sd1.denoiser.state_dict().items())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_figure_and_sweep_reports_write_pngs_and_log_them(tmp_path):
    written = []
    module = SimpleNamespace(
        hparams=SimpleNamespace(output_dir=str(tmp_path / "out")),
        table=TABLE,
        figures=lambda: {"heatmap": figure()},
        write=lambda: written.append(True),
    )
    FigureReport().on_fit_end(trainer(tmp_path), module)
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 0 and events(tmp_path)
    (tmp_path / "out" / "heatmap.png").unlink()
    SweepReport().on_validation_end(trainer(tmp_path), module)
    assert written == [True] and (tmp_path / "out" / "heatmap.png").stat().st_size > 0
    module.table = []  # nothing swept: nothing written
    SweepReport().on_validation_end(trainer(tmp_path), module)
    assert written == [True]


def test_window_grid_has_a_row_per_pair_and_seed_and_a_column_per_window(tmp_path):
    writer = WindowGridWriter(scale=2.0, max_rows=2)
    module = SimpleNamespace(hparams=SimpleNamespace(output_dir=str(tmp_path / "out")))
    t = trainer(tmp_path)
    writer.on_predict_start(t, module)
    rows = [("a red circle", "a circle", s) for s in range(3)]
    for label in ("none", "[0, 1]"):
        outputs = {"rows": rows, "labels": [label] * 3, "images": torch.rand(3, 3, 8, 8)}
        writer.on_predict_batch_end(t, module, outputs, None, 0)
    writer.on_predict_end(t, module)
    from PIL import Image

    width, height = Image.open(tmp_path / "out" / "windows.png").size
    assert width > 0 and height > 0  # its cells and labels: tests/unit/test_grids.py
    legend = (tmp_path / "out" / "windows.txt").read_text().splitlines()
    assert legend[0] == "columns: none [0, 1]" and len(legend) == 3


def test_sample_grid_logs_the_first_batch_only(tmp_path):
    grid = SampleGrid(n=4, nrow=2, upscale=2)
    t = trainer(tmp_path)
    outputs = {"images": torch.rand(6, 3, 8, 8), "captions": [f"c{i}" for i in range(6)]}
    grid.on_validation_batch_end(t, None, outputs, None, batch_idx=1)
    assert not events(tmp_path)
    grid.on_validation_batch_end(t, None, outputs, None, batch_idx=0)
    t.loggers[0].experiment.flush()
    assert events(tmp_path)


def test_an_export_replaces_only_an_export_and_a_failed_or_killed_one_leaves_the_old(sd1, tmp_path):
    edit = LocoEdit(sites=(1,), keep_empty=False).compute(sd1, [STRIPED])
    folder = tmp_path / "edited"
    export_pipeline(sd1, folder)
    unet = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    (tmp_path / ".edited.loco-tmp.k1ll3d").mkdir()  # what a kill during an export leaves
    broken = sd1.pipeline.save_pretrained

    def dies_halfway(path, **kw):
        (Path(path) / "model_index.json").write_text("{")
        raise OSError("disk full")

    sd1.pipeline.save_pretrained = dies_halfway
    try:
        with pytest.raises(OSError, match="disk full"), edit.applied(sd1):
            export_pipeline(sd1, folder)
    finally:
        sd1.pipeline.save_pretrained = broken
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == unet
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited"]  # the killed one's too
    for target, kind in ((tmp_path / "notes.txt", "a file"), (tmp_path / "data", "a folder")):
        target.mkdir() if kind == "a folder" else target.write_text("mine")
        with pytest.raises(FileExistsError, match=f"{target} exists and is {kind}"):
            export_pipeline(sd1, target)
        assert target.exists()
