"""Localization on the planted world model, where the answer is known.

``world-planted`` was trained so that only sites 5-6 see colour and only sites 3-4 see style
(recorded in its ``loco_world.json``). Scored by the exact readers over two sampling seeds. At the
planted window's size m, the paper's argmin must be the planted window; the smallest m within the
margin may be smaller (one planted site can carry the attribute alone) but never leaves it.
Causal tracing, the older localizer, runs on the same model with one row per layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loco_lightning.cli import main
from loco_lightning.localization.causal import text_layers, unet_layers
from loco_lightning.models import load_model
from loco_lightning.models.pipeline import packaged
from loco_lightning.models.world import RECORD_NAME
from tests.helpers import tiny_clip_folder

PLANTED = json.loads((Path(packaged("world-planted")) / RECORD_NAME).read_text())["planted"]


@pytest.mark.parametrize(
    ("attribute", "config"), [("colour", "world_colour"), ("style", "world_style")]
)
def test_locogen_selects_the_planted_window(attribute, config, tmp_path):
    out = tmp_path / "localize"
    main(
        [
            "localize",
            "--config",
            f"configs/localize/{config}.yaml",
            "--model.diffusion.source",
            "world-planted",
            "--model.clip",
            tiny_clip_folder(),
            "--model.score",
            "reader",
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
        ]
    )
    selection = json.loads((out / "selection.json").read_text())
    planted = PLANTED[attribute]
    # the paper's rule at the planted size m: argmin over windows is exactly the planted window
    assert selection["best"][str(len(planted))]["start"] == planted[0], selection
    # the smallest window within the margin of the reference lies inside it
    assert selection["window"] and set(selection["window"]) <= set(planted), selection
    table = json.loads((out / "windows.json").read_text())
    reader = {(r["m"], r["start"]): r["reader_mean"] for r in table}
    # every window that holds no planted site leaves the attribute in place
    window = set(planted)
    for (m, start), value in reader.items():
        if 0 < m < 7 and not window & set(range(start, start + m)):
            assert value >= reader[(0, 0)] - 0.15, (m, start, value)


def test_causal_tracing_on_the_planted_model_has_one_row_per_layer(tmp_path):
    pairs = json.dumps(
        [
            {"original": "a red striped circle", "target": "a red circle"},
            {"original": "a blue striped square", "target": "a blue square"},
        ]
    )
    main(
        [
            "trace",
            "--config",
            "configs/trace/world_style.yaml",
            "--model.clip",
            tiny_clip_folder(),
            "--model.diffusion.steps",
            "10",
            "--data.pairs",
            pairs,
            "--model.output_dir",
            str(tmp_path / "trace"),
            "--trainer.logger",
            "false",
        ]
    )
    model = load_model("world", "world-planted")
    n_layers = len(unet_layers(model.unet)) + len(text_layers(model.pipeline, ("text_encoder",)))
    table = json.loads((tmp_path / "trace" / "layers.json").read_text())
    assert len(table) == 2 + n_layers and len({r["layer"] for r in table}) == len(table)
    assert {r["layer"] for r in table[:2]} == {"clean", "corrupted"}
