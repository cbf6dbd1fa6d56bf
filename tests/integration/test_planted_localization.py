"""LocoGen and LocoEdit on the planted worlds, where the answer is known.

Each planted world (SD-1, SD-2, SD-XL, IF, PixArt-α; SD3 with style alone) was trained so that
only its colour window sees colour and only its style window sees style (recorded in its
``loco_world.json``), each site of a window able to carry the attribute alone. Run as a user
runs it: the ordinary CLI, CLIP scoring by the world's CLIP, LocoGen racing its windows and
deciding halfway (``model.racing`` and ``model.decide_at``, the README's cheaper sweep; on the
cheapest world's colour racing alone and the exhaustive sweep run too and must select the same
window; ``bench/localize_cost.py`` compares them on every world). The selected window lies inside
the planted one; at the planted window's size m the paper's argmin is exactly the planted
window. LocoEdit there must reach the all-sites reference, a random window of the same size must
leave the attribute in place, and the other attributes must stay.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from loco_lightning.cli import main
from loco_lightning.localization.causal import text_layers, unet_layers
from loco_lightning.models import load_model
from loco_lightning.models.pipeline import packaged
from loco_lightning.models.world import RECORD_NAME
from tests.helpers import scratch

WORLDS = (
    "world-sd1-planted",
    "world-sd2-planted",
    "world-sdxl-planted",
    "world-if-planted",
    "world-pixart-planted",
    "world-sd3-planted",
    "world-flux-planted",
)
CONFIGS = {"colour": "world_colour", "style": "world_style"}
PAIRS = {
    "colour": "datasets/world/colour_red.pairs.yaml",
    "style": "datasets/world/style_striped.pairs.yaml",
}


@functools.cache
def planted(world: str) -> dict[str, list[int]]:
    return json.loads((Path(packaged(world)) / RECORD_NAME).read_text())["world"]["planted"]


CASES = [(w, a) for w in WORLDS for a in sorted(planted(w))]  # world-sd3-planted: style only


RACE = ("--model.racing", "{}")
FAST = (*RACE, "--model.decide_at", "0.5")  # a quarter of the cost or less
LOCATE = FAST  # what the tests below localize with (as the README's cheaper sweep)
# the cheapest exhaustive sweep, the one whose selection is not the planted window itself (the
# bench: every world and attribute)
EXHAUSTIVE_TOO = (("world-sd1-planted", "colour"),)


@functools.cache
def located(world: str, attribute: str, *options: str) -> Path:
    """LocoGen on a planted world for one attribute, run once per session: windows of one site
    and of the planted size."""
    out = scratch(f"planted-{attribute}-") / "localize"
    sizes = sorted({1, len(planted(world)[attribute])})
    main(
        [
            "localize",
            "--config",
            f"configs/localize/{CONFIGS[attribute]}.yaml",
            "--model.diffusion.source",
            world,
            "--data.window_sizes",
            json.dumps(sizes),
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
            *options,
        ]
    )
    return out


@functools.cache
def edited(world: str, attribute: str) -> dict[tuple[str, str], float]:
    """LocoEdit at the located window (with all sites and a random window beside it), on four
    seeds: 48 images per group, so that one image is 0.021 of a rate. On two seeds (one image
    0.042) the 0.10 margins were 2.4 images wide, and SD-XL's colour edit (4 of 24 against the
    reference's 1) and PixArt's style edit (9 of 24 against 6) failed by one image; on four
    seeds they stop 0.083 (8 of 48 against 4) and 0.062 (19 of 48 against 16) above it. On the
    joint-attention worlds UCE's edit of the caption's way in (``uce_embedder``) runs beside
    them. (world-if-planted's edits ran on two seeds while they left
    every margin unused; the narrower IF world's style edit at [4] leaves 0.333 against the
    reference prompts' 0.25 there, 0.458 against 0.396 on four.)"""
    out = scratch(f"planted-edit-{attribute}-")
    specificity = ["locoedit"]
    extra = []
    if world in JOINT_WORLDS:  # UCE's own edit of diffusion transformers beside LocoEdit
        specificity.append("uce_embedder")
        extra = ["--model.editors.uce_embedder", json.dumps(UCE_EMBEDDER)]
    main(
        [
            "edit",
            "--config",
            f"configs/edit/{CONFIGS[attribute]}.yaml",
            "--model.diffusion.source",
            world,
            "--model.locogen",
            str(located(world, attribute, *LOCATE)),
            "--data.groups",  # what the tests read: generality would add a quarter of the time
            "[efficacy, specificity, reference]",
            # what the tests read: the reference prompts for the unedited model only, the
            # other attributes of unrelated prompts for the located edit only
            "--data.edited_by",
            json.dumps({"reference": [], "specificity": specificity}),
            "--data.seeds",
            "[0, 1, 2, 3]",
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
            *extra,
        ]
    )
    rows = json.loads((out / "results.json").read_text())
    return {(r["method"], r["group"]): r["reader"] for r in rows}


JOINT_WORLDS = ("world-sd3-planted", "world-flux-planted")
# every caption row remapped, as the world configs' LocoEdit does (UCE's last token alone leaves
# stripes on 0.792 of 48 images of world-sd3-planted, where the reference prompts leave 0.458)
UCE_EMBEDDER = {"class_path": "UCEEmbedder", "init_args": {"key_tokens": "aligned"}}


def selection(world: str, attribute: str, *options: str) -> dict:
    return json.loads((located(world, attribute, *options) / "selection.json").read_text())


@pytest.mark.parametrize(("world", "attribute"), CASES)
def test_locogen_selects_a_window_inside_the_planted_one(world, attribute):
    sel = selection(world, attribute, *LOCATE)
    assert sel["score"] == "clip" and sel["clip"] == "worldclip"
    window = planted(world)[attribute]
    # the smallest window within the margin of the reference lies inside the planted window
    assert sel["window"] and set(sel["window"]) <= set(window), sel


@pytest.mark.parametrize(("world", "attribute"), EXHAUSTIVE_TOO)
def test_racing_alone_and_with_an_early_decision_select_the_exhaustive_sweeps_window(
    world, attribute
):
    exhaustive = selection(world, attribute)
    raced, fast = selection(world, attribute, *RACE), selection(world, attribute, *FAST)
    assert raced["window"] == fast["window"] == exhaustive["window"], (raced, fast)
    # the race's survivors ran on every prompt and seed: their scores are the exhaustive ones
    # (up to the float order of other batch companions)
    assert raced["best"].keys() == exhaustive["best"].keys()
    for m, best in exhaustive["best"].items():
        assert raced["best"][m]["start"] == best["start"], (m, raced["best"])
        assert raced["best"][m]["score"] == pytest.approx(best["score"], abs=1e-3)
    assert raced["sample_steps"] < exhaustive["sample_steps"] / 2, raced
    assert fast["exhaustive_sample_steps"] >= 4 * fast["sample_steps"], fast


# On world-sd1-planted's colour (planted at 4-5) LocoGen's margin, 0.3 of the CLIP gap between
# the original and the all-sites reference, admits site 4 alone (29.24 against 27.82, original
# 57.46), and the closed form there leaves red on 6 of 48 images against the reference prompts' 2
# (0.125 / 0.042; all sites 0.125), inside the 0.10 margin by less than one image. The world was
# trained with planted_alone_p so that each site of a window must carry its attribute: without
# it (the world before, and a 3,000-step retraining) the edit at site 4 alone left 0.229-0.292
# against 0.104-0.146, and the retraining's style edit at site 3 alone missed by one image.


def marked(cases, marks: dict):
    return [pytest.param(*c, marks=marks[c]) if c in marks else c for c in cases]


@pytest.mark.parametrize(("world", "attribute"), CASES)
def test_at_the_planted_size_the_argmin_is_exactly_the_planted_window(world, attribute):
    window = planted(world)[attribute]
    assert selection(world, attribute, *LOCATE)["best"][str(len(window))]["start"] == window[0]


# On SD3's joint attention LocoGen finds the planted blocks exactly, but the key/value closed form
# does not do what the window swap does: the text stream a block reads varies with the image and the
# step, and one linear map of add_k_proj/add_v_proj does not take the concept's stream to the
# target's. LocoEdit at [3, 4] leaves stripes on 46 of 48 efficacy images (0.958; all 7 blocks
# 0.958; reference prompts 0.396; on 24: 0.958, 0.958, 0.375), 0.958 with λ 0.01 and 1.0 without
# keep_empty or preserve prompts. On these weights, over the edit's own rows (the request's 48
# templates x 2 seeds x 25 steps, aligned positions: 76,800 rows of 64), the best linear map of the
# stream (least squares) leaves 36 % of the keys' concept-to-target difference at block 3 and 37 %
# at block 4 (values 36 %, 43 %); a bias term changes nothing (36 %, 37 %), a separate map per step
# leaves 22-52 %, and the closed form with its kept empty prompt and preserve rows 41-49 %. On the
# world's earlier training (2,000 steps: 0.875 at [3, 4]) the least-squares map at blocks 3-4,
# fitted on 12 prompts x 2 seeds x 10 steps, left 25-34 % and stripes on 3 of 8 images, where the
# swap at [3, 4] removes them (test_planted_windows_control_their_attribute). Even in sample it
# fails: fitted on the efficacy prompts' own rows (ridge 1e-4, no preserve rows, empty prompt free)
# it leaves stripes on 24 of 24 images, the swap on 17 (reference prompts 17). On FLUX's
# double-stream blocks the same edit works (world-flux-planted: 1.0 -> 0.5, reference 0.417) though
# least squares leaves more there (47-52 %): on SD3 what is left carries the style
# (bench/joint_stream_fit.py --read). Not one training's: retrained with --seed_everything 1 (16.1
# min) the edit leaves 0.833, fitted in sample 0.792, where the swap and the reference prompts leave
# 0.583.
# Nor do rows read along the edited model's own runs: refitted in sample on them four times (ridge
# 1e-3, no preserve rows or kept empty prompt, rows pooled), the map leaves 0.958, 0.833, 0.750,
# 0.750 (in-sample swap and reference prompts 0.708) while the other attributes fall from 1.0 to
# 0.792 (bench/joint_stream_fit.py --rounds 4). What works is UCE's own edit of the caption's way in
# (uce_embedder, test_uce_embedder_removes_the_style_…): 0.333.
JOINT_EDIT = pytest.mark.xfail(
    strict=True, reason="SD3: the key/value closed form at 3-4 leaves stripes on 0.958 (ref 0.396)"
)
JOINT_EDITS = {("world-sd3-planted", "style"): JOINT_EDIT}


@pytest.mark.parametrize(("world", "attribute"), marked(CASES, JOINT_EDITS))
def test_locoedit_at_the_located_window_removes_it_and_a_random_window_does_nothing(
    world, attribute
):
    read = edited(world, attribute)
    unedited, reference = read[("unedited", "efficacy")], read[("unedited", "reference")]
    assert unedited >= 0.75 and reference <= unedited - 0.4, read
    # the edit takes away most of what the prompt without the concept does (FLUX: 1.0 -> 0.521,
    # reference 0.438); how
    # close it comes is the next test's
    assert unedited - read[("locoedit", "efficacy")] > (unedited - reference) / 2, read
    assert abs(read[("locoedit_random", "efficacy")] - unedited) <= 0.05, read
    # specificity: the other attributes of unrelated prompts are read back as before
    spec = read[("locoedit", "specificity")] - read[("unedited", "specificity")]
    assert abs(spec) <= 0.05, read


@pytest.mark.parametrize(("world", "attribute"), marked(CASES, JOINT_EDITS))
def test_locoedit_at_the_located_window_reaches_the_reference_and_all_sites(world, attribute):
    read = edited(world, attribute)
    located_ = read[("locoedit", "efficacy")]
    assert located_ <= read[("unedited", "reference")] + 0.10, read
    # and is no weaker than the same closed form on every site (it may be stronger: SD-2's style
    # edit at 3-4 leaves 0.375, as the reference prompts do, where all sites leave 0.417)
    assert located_ <= read[("locoedit_all", "efficacy")] + 0.10, read


@pytest.mark.parametrize("world", JOINT_WORLDS)
def test_uce_embedder_removes_the_style_where_joint_attention_reads_the_caption(world):
    """UCE's closed form on context_embedder and the pooled projection, which read the text
    encoders' outputs alone: on SD3, where the key/value closed form at the located blocks
    fails, it reaches the reference prompts; on FLUX it does as well as LocoEdit there."""
    read = edited(world, "style")
    unedited, reference = read[("unedited", "efficacy")], read[("unedited", "reference")]
    got = read[("uce_embedder", "efficacy")]
    assert got <= reference + 0.10, read
    assert unedited - got > (unedited - reference) / 2, read
    spec = read[("uce_embedder", "specificity")] - read[("unedited", "specificity")]
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
    model = load_model(source="world-sd1-planted")
    n_layers = len(unet_layers(model.denoiser))
    n_layers += len(text_layers(model.pipeline, ("text_encoder",)))
    table = json.loads((tmp_path / "trace" / "layers.json").read_text())
    assert len(table) == 2 + n_layers and len({r["layer"] for r in table}) == len(table)
    assert {r["layer"] for r in table[:2]} == {"clean", "corrupted"}


# The DiT localizer against LocoGen on each transformer world: whether its top K is the planted
# window (asserted where it is; the joint-attention worlds' picks are reported in the README).
DIT_AGREES = {"world-pixart-planted": True, "world-sd3-planted": False, "world-flux-planted": True}


@pytest.mark.parametrize(("world", "attribute"), [c for c in CASES if c[0] in DIT_AGREES])
def test_the_dit_localizer_is_compared_with_locogen_on_the_transformer_worlds(
    world, attribute, tmp_path
):
    """Zarei et al.'s attention contribution, top K = the planted size, beside LocoGen's window
    (the planted one) and their overlap. On PixArt's cross-attention and FLUX's double-stream
    blocks it picks the planted blocks; on SD3's joint attention it does not: there every block's
    text tokens carry the caption, read or not. (On world-sd1-planted's UNet it picks sites
    [2, 4] for colour and [1, 2] for style: the measure is made for DiTs, whose blocks share one
    width.)"""
    window = planted(world)[attribute]
    main(
        [
            "contribution",
            "--config",
            "configs/contribution/world_style.yaml",
            "--model.diffusion.source",
            world,
            "--data.pairs",
            PAIRS[attribute],
            "--model.top_k",
            str(len(window)),
            "--model.locogen",
            str(located(world, attribute, *LOCATE)),
            "--model.output_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
        ]
    )
    sel = json.loads((tmp_path / "selection.json").read_text())
    assert sel["locogen"] == window and len(sel["window"]) == len(window), sel
    assert sel["overlap"] == sorted(set(sel["window"]) & set(window)), sel
    assert (sel["window"] == window) == DIT_AGREES[world], sel
