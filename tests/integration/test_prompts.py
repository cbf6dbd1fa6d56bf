"""`loco prompts`: a concept's three prompt sets, for any world concept or a real one, written so
that the jobs read them (checked by reading them back, and by running LocoGen on one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from loco_lightning.cli import main
from loco_lightning.data.world.prompt_sets import CONCEPTS, prompt_sets
from loco_lightning.editing.data import load_eval_prompts
from loco_lightning.editing.requests import edit_requests


@pytest.mark.parametrize("concept", sorted(CONCEPTS))
def test_the_shipped_world_sets_are_what_the_generator_writes(concept):
    pairs, edit, triad = prompt_sets(concept)
    for suffix, data in (("pairs", {"pairs": pairs}), ("edit", edit), ("eval", triad)):
        shipped = yaml.safe_load(Path(f"datasets/world/{concept}.{suffix}.yaml").read_text())
        assert shipped == json.loads(json.dumps(data)), suffix


def test_any_world_concept_gets_sets_that_localize_on_the_world(tmp_path, capsys):
    # a shape: world-sd1 keeps circle and star at site 2; colours, unplanted, where its training
    # put them (red at [4, 5], cyan in no window of three sites or fewer: the best, 3-5, keeps
    # 45.3 of the CLIP score against all sites' 29.4; the world before it kept colour at site 4)
    main(["prompts", "shape_star", "--out", str(tmp_path), "--n", "4"])
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in written] == [
        "shape_star.pairs.yaml", "shape_star.edit.yaml", "shape_star.eval.yaml"
    ]  # fmt: skip
    pairs = yaml.safe_load((tmp_path / "shape_star.pairs.yaml").read_text())["pairs"]
    assert all("star" in p["original"] and "star" not in p["target"] for p in pairs)
    assert all(p["expect"] == {"shape": "star"} for p in pairs)
    [request] = edit_requests(str(tmp_path / "shape_star.edit.yaml"))
    assert request.concept == "star"
    main(
        [
            "localize",
            "--config",
            "configs/localize/world_shape.yaml",
            "--trainer.logger",
            "false",
            "--data.pairs",
            str(tmp_path / "shape_star.pairs.yaml"),
            "--data.window_sizes",
            "[1]",
            "--data.seeds",
            "[0]",
            "--model.output_dir",
            str(tmp_path / "loc"),
            "--model.require_signal",
            "false",
        ]
    )
    assert json.loads((tmp_path / "loc" / "selection.json").read_text())["window"]


def test_a_real_concept_gets_sets_from_its_kinds_templates(tmp_path):
    main(["prompts", "monet", "--kind", "style", "--name", "Claude Monet", "--out", str(tmp_path)])
    pairs = yaml.safe_load((tmp_path / "monet.pairs.yaml").read_text())["pairs"]
    assert len(pairs) == 12 and all("Claude Monet" in p["original"] for p in pairs)
    assert all("Monet" not in p["target"] for p in pairs)
    [request] = edit_requests(str(tmp_path / "monet.edit.yaml"))
    assert request.concept == "Claude Monet" and all("{}" in t for t in request.templates)
    triad = load_eval_prompts(tmp_path / "monet.eval.yaml")
    groups = {p.group for p in triad}
    assert groups == {"efficacy", "generality", "specificity", "reference"}
    assert not any("Monet" in p.prompt for p in triad if p.group == "specificity")
    main(["prompts", "snoopy", "--kind", "object", "--name", "Snoopy", "--out", str(tmp_path)])
    pairs = yaml.safe_load((tmp_path / "snoopy.pairs.yaml").read_text())["pairs"]
    assert pairs[0] == {
        "original": "a photo of Snoopy on a table",
        "target": "a photo of an object on a table",
    }


def test_an_unknown_world_concept_is_refused_with_the_ones_there_are(tmp_path):
    with pytest.raises(ValueError, match=r"'style_wavy' is no LocoWorld concept; .*style_dotted"):
        main(["prompts", "style_wavy", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())
