"""Many concepts at once on the world's grid (``loco scale``): known answers of the readers."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest

from loco_lightning.cli import main
from tests.helpers import scratch

EDITORS = {
    "locoedit_all": {"class_path": "LocoEdit", "init_args": {"sites": "all"}},
    "uce": {"class_path": "UCE"},
}
RATES = ("unlearning_accuracy", "in_domain_retain", "cross_domain_retain")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")


def run(out: Path, *options: str) -> None:
    """On the planted SD-1 world, whose colours reach the image only through sites 4-5: there
    erasing them is a known answer. On the natural world-sd1, how far an editor keyed on a word
    erases a colour is its training's: two retrains of its recipe left the one erased colour on
    half of 6 images a value, and UCE erasing all eight left yellow in every image of it."""
    main(
        [
            "scale",
            "--config",
            "configs/scale/world_colour.yaml",
            "--model.diffusion.source",
            "world-sd1-planted",
            "--model.editors",
            json.dumps(EDITORS),
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
            *options,
        ]
    )


@functools.cache
def table() -> list[dict]:
    out = scratch("scale-")
    run(out, "--model.sizes", "[1, 4, -1]", "--data.per_value", "3")
    assert (out / "scale.png").stat().st_size > 0
    return json.loads((out / "scale.json").read_text())


def row(method: str, n: int) -> dict:
    return next(r for r in table() if r["method"] == method and r["erased"] == n)


def test_one_row_per_editor_and_size_with_nested_value_sets():
    assert [(r["method"], r["erased"]) for r in table()] == [
        ("unedited", 0),
        *((m, n) for n in (1, 4, 8) for m in EDITORS),
    ]
    for method in EDITORS:
        sets = [set(row(method, n)["values"].split()) for n in (1, 4, 8)]
        assert sets[0] < sets[1] < sets[2] == set(COLOURS), sets
        for n in (1, 4, 8):
            r = row(method, n)
            assert r["seconds_to_edit"] > 0 and math.isfinite(r["fid"]), r
            # only what is undefined is missing: nothing is kept in-domain when all are erased
            assert math.isnan(r["in_domain_retain"]) == (n == 8), r
    assert math.isnan(row("unedited", 0)["unlearning_accuracy"])


def test_the_unedited_model_reads_every_colour_and_the_other_attributes():
    r = row("unedited", 0)
    assert all(r[c] >= 0.9 for c in COLOURS) and r["cross_domain_retain"] >= 0.9, r


def test_one_colour_erased_is_gone_and_the_others_stay():
    unedited = row("unedited", 0)
    for method in EDITORS:
        r = row(method, 1)
        (erased,) = r["values"].split()
        assert r[erased] <= 0.34 and r["unlearning_accuracy"] == 1 - r[erased], r
        assert r["in_domain_retain"] >= unedited["in_domain_retain"] - 0.1, r
        kept = [c for c in COLOURS if c != erased]
        assert all(r[c] >= unedited[c] - 0.34 for c in kept), r


def test_every_erased_colour_reads_less_than_before():
    unedited = row("unedited", 0)
    for method in EDITORS:
        for n in (4, 8):
            r = row(method, n)
            assert all(r[c] < unedited[c] for c in r["values"].split()), r


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (("--model.sizes", "[4, 1]"), "ascending numbers of colour values up to 8"),
        (("--model.sizes", "[1, 9]"), "up to 8"),
        (("--model.sizes", "[2, 1, -1]"), "ascending"),
        (("--model.sizes", "[0]"), "sizes=[0]"),
        (("--model.editors", "{}"), "model.editors is empty"),
        (("--data.per_value", "0"), "per_value=0"),
    ],
)
def test_bad_settings_are_refused_before_any_work(options, says, tmp_path):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        main(
            [
                "scale",
                "--config",
                "configs/scale/world_colour.yaml",
                "--model.output_dir",
                str(tmp_path),
                "--trainer.logger",
                "false",
                *options,
            ]
        )
