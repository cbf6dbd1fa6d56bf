"""LocoGen and LocoEdit on the planted SD-1 world, where the answer is known.

``world-sd1-planted`` was trained so that only sites 5-6 see colour and only sites 3-4 see style
(recorded in its ``loco_world.json``). Run as a user runs it: the ordinary CLI, CLIP scoring by
the world's CLIP. At the planted window's size m the paper's argmin must be the planted window;
the smallest m within the margin may be smaller (one planted site can carry the attribute alone)
but never leaves it. LocoEdit there must reach the all-sites reference, a random window of the
same size must leave the attribute in place, and the other attributes must stay.
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

SOURCE = "world-sd1-planted"
PLANTED = json.loads((Path(packaged(SOURCE)) / RECORD_NAME).read_text())["world"]["planted"]
CONFIGS = {"colour": "world_colour", "style": "world_style"}


@pytest.fixture(scope="module", params=sorted(PLANTED))
def located(request, tmp_path_factory):
    attribute = request.param
    out = tmp_path_factory.mktemp(attribute) / "localize"
    main(
        [
            "localize",
            "--config",
            f"configs/localize/{CONFIGS[attribute]}.yaml",
            "--model.diffusion.source",
            SOURCE,
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
        ]
    )
    return attribute, out


def test_locogen_selects_the_planted_window(located):
    attribute, out = located
    selection = json.loads((out / "selection.json").read_text())
    assert selection["score"] == "clip" and selection["clip"] == "worldclip"
    planted = PLANTED[attribute]
    # the paper's rule at the planted size m: argmin over windows is exactly the planted window
    assert selection["best"][str(len(planted))]["start"] == planted[0], selection
    # the smallest window within the margin of the reference lies inside it
    assert selection["window"] and set(selection["window"]) <= set(planted), selection


def test_locoedit_at_the_planted_window_removes_the_attribute_and_nothing_else(located, tmp_path):
    attribute, out = located
    main(
        [
            "edit",
            "--config",
            f"configs/edit/{CONFIGS[attribute]}.yaml",
            "--model.diffusion.source",
            SOURCE,
            "--model.locogen",
            str(out),
            "--model.output_dir",
            str(tmp_path / "edit"),
            "--trainer.logger",
            "false",
        ]
    )
    rows = json.loads((tmp_path / "edit" / "results.json").read_text())
    read = {(r["method"], r["group"]): r["reader"] for r in rows}
    unedited, reference = read[("unedited", "efficacy")], read[("unedited", "reference")]
    assert unedited >= 0.9 and reference <= unedited - 0.4, read
    reached = read[("locoedit/locogen", "efficacy")]
    assert abs(reached - read[("locoedit/all", "efficacy")]) <= 0.10, read
    assert reached <= reference + 0.10, read
    assert abs(read[("locoedit/random", "efficacy")] - unedited) <= 0.05, read
    # specificity: the other attributes of unrelated prompts are read back as before
    spec = read[("locoedit/locogen", "specificity")] - read[("unedited", "specificity")]
    assert abs(spec) <= 0.05, read


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
    model = load_model(source=SOURCE)
    n_layers = len(unet_layers(model.unet)) + len(text_layers(model.pipeline, ("text_encoder",)))
    table = json.loads((tmp_path / "trace" / "layers.json").read_text())
    assert len(table) == 2 + n_layers and len({r["layer"] for r in table}) == len(table)
    assert {r["layer"] for r in table[:2]} == {"clean", "corrupted"}
