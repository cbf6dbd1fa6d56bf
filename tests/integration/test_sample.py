"""`loco sample`: a saved edit, its exact LoRA and its exported pipeline, sampled beside the base
model from the same noise, give the same images; the base's differ."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from loco_lightning.cli import main
from loco_lightning.editing.editors import run_editor
from loco_lightning.editing.exports import export_lora, export_pipeline
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.requests import EditRequest
from loco_lightning.models.diffusion import Diffusion

STRIPED = EditRequest("striped", "", ("a red {} circle", "a blue {} square", "a {} star"))
VARIANTS = ("saved", "lora", "edited")


def test_every_form_of_one_edit_samples_alike_and_unlike_the_base(tmp_path):
    model = Diffusion(source="world-sd1").load()
    # every site, aligned keys: where a natural world keeps a style, and how much these three
    # templates keyed on the word alone move, is its training's (world-sd1 spreads striped over
    # sites 1 and 4; keyed on the word the images moved by 0.007 a pixel, aligned by 0.144), and
    # this test is about the edit's forms, not its place
    edit = run_editor(LocoEdit(sites="all", key_tokens="aligned"), model, [STRIPED])
    edit.save(tmp_path / "saved.safetensors")
    export_lora(edit, tmp_path / "lora")
    with edit.applied(model):
        export_pipeline(model, tmp_path / "edited")
    paths = {"saved": tmp_path / "saved.safetensors", "lora": tmp_path / "lora"}
    paths["edited"] = tmp_path / "edited"
    prompts = ["a red striped circle", "a blue striped square", "a green striped star"]
    main(
        [
            "sample",
            "--config",
            "configs/sample/world_shape.yaml",
            "--model.variants",
            json.dumps({k: str(v) for k, v in paths.items()}),
            "--model.output_dir",
            str(tmp_path / "out"),
            "--model.diffusion.steps",
            "6",
            "--data.prompts",
            json.dumps(prompts),
            "--data.seeds",
            "[0, 1]",
        ]
    )
    out = tmp_path / "out"
    grid = Image.open(out / "samples.png")
    assert grid.size[0] > grid.size[1] / 2  # 4 columns, 6 rows
    images = {
        name: np.stack(
            [np.asarray(Image.open(out / name / f"{i:03d}.png"), float) / 255 for i in range(6)]
        )
        for name in ("base", *VARIANTS)
    }
    for name in VARIANTS[1:]:
        assert np.abs(images[name] - images["saved"]).max() <= 2 / 255, name
    assert np.abs(images["saved"] - images["base"]).mean() > 0.02
