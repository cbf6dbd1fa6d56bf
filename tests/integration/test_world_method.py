"""LocoGen and LocoEdit on the shipped natural SD-1 world, judged by the exact readers.

Localization in a model trained from scratch is emergent (WORLD.md), so these are robust
assertions, not a hard-coded window: shape is carried by a small window, an edit there removes
it down to the model's prior and leaves other prompts alone, a random window does nothing, and
an all-sites edit costs specificity. ``LOCO_WORLD_SOURCE`` points them at a candidate model folder
(default: the packaged ``world-sd1``).
"""

from __future__ import annotations

import json
import os

import pytest

from loco_lightning.cli import main
from loco_lightning.editing.editors import run_editor
from loco_lightning.editing.edits import load_edit
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.requests import edit_requests, preserve_prompts
from loco_lightning.models import load_model
from tests.helpers import survival, tiny_clip_folder

SOURCE = os.environ.get("LOCO_WORLD_SOURCE", "world-sd1")


@pytest.fixture(scope="module")
def located(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "localize"
    main(
        [
            "localize",
            "--config",
            "configs/localize/world_shape.yaml",
            "--model.diffusion.source",
            SOURCE,
            "--model.clip",
            tiny_clip_folder(),
            "--model.score",
            "reader",
            "--data.seeds",
            "[0]",
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
        ]
    )
    table = json.loads((out / "windows.json").read_text())
    return out, {(r["m"], r["start"]): r["reader_mean"] for r in table}


def test_shape_lives_in_a_small_window(located):
    out, reader = located
    original, reference = reader[(0, 0)], reader[(7, 0)]
    assert original >= 0.9 and reference <= 0.3
    best = min(((m, s) for m, s in reader if 0 < m <= 3), key=reader.get)
    assert reader[best] <= reference + 0.15 and best[1] + best[0] - 1 <= 3  # within sites 0-3
    selection = json.loads((out / "selection.json").read_text())
    assert selection["window"] and len(selection["window"]) <= 3


def test_editing_the_located_window_removes_shape_and_nothing_else(located, tmp_path):
    out, _ = located
    main(
        [
            "edit",
            "--config",
            "configs/edit/world_shape.yaml",
            "--model.diffusion.source",
            SOURCE,
            "--model.clip",
            tiny_clip_folder(),
            "--model.locogen",
            str(out),
            "--data.seeds",
            "[0]",
            "--model.output_dir",
            str(tmp_path / "edit"),
            "--trainer.logger",
            "false",
        ]
    )
    rows = json.loads((tmp_path / "edit" / "results.json").read_text())
    read = {(r["method"], r["group"]): r["reader"] for r in rows}
    reference = read[("unedited", "reference")]
    assert read[("unedited", "efficacy")] >= 0.9
    for group in ("efficacy", "generality"):
        assert read[("locoedit", group)] <= reference + 0.10, group
    assert abs(read[("locoedit", "specificity")] - read[("unedited", "specificity")]) <= 0.05
    assert read[("locoedit_random", "efficacy")] >= 0.8  # a wrong window changes nothing
    assert read[("locoedit_all", "efficacy")] <= reference + 0.10
    # the edit set's preserve prompts came with its request
    edit = load_edit(tmp_path / "edit" / "locoedit.safetensors")
    [request] = edit.metadata["requests"]
    assert list(request["preserve"]) == preserve_prompts("datasets/world/shape_circle.edit.yaml")
    assert edit.metadata["empty_drift"] <= 0.01  # the unconditional branch is kept


@pytest.fixture(scope="module")
def world():
    """The world under test, which must show the circle on the efficacy prompts unedited."""
    model = load_model(source=SOURCE)
    assert survival(model, "shape_circle") >= 0.9
    return model


@pytest.mark.parametrize("key_tokens", ["last_subject", "aligned"])
def test_the_reference_key_tokens_edit_the_world(world, key_tokens):
    """LocoEdit keyed on the last subject token (the reference's choice, and every editor's
    default) must remove the concept on the default world, not only the aligned tokens: measured
    on all sites, circle survives 0.17 of 12 efficacy images either way. Retrained worlds may
    carry a concept in the tokens after it instead (with eight heads, one or two: 0.58-1.0 with
    the last subject, 0.17-0.33 aligned), which breaks the README's example and SPEED;
    ``model.tail_drop_p`` trains it out (0.0-0.08 on three retrains), at a price (its
    docstring)."""
    requests = edit_requests("datasets/world/shape_circle.edit.yaml")
    edit = run_editor(LocoEdit(sites="all", key_tokens=key_tokens), world, requests)
    with edit.applied(world):
        assert survival(world, "shape_circle") <= 0.5
