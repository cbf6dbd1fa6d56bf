"""Recovery attacks and the robustness card, with known answers on the planted SD-1 world.

An attack changes what the denoiser is conditioned on: at budget 0 nothing beyond the prompt
(or, from an initializer word, less), on the unedited model textual inversion must relearn the
concept from a word that does not say it, and a larger budget must not do worse.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch

from loco_lightning.cli import main
from loco_lightning.editing.requests import EditRequest, edit_requests
from loco_lightning.models import load_model
from loco_lightning.models.sampling import clean_latents
from loco_lightning.robustness.attacks import (
    ConceptVector,
    Examples,
    PromptAttack,
    TextualInversion,
    concept_slots,
    replaced,
)
from tests.helpers import mini_model, miniature_job, scratch

WORLD = "world-sd1-planted"  # style planted at sites 2-3: LocoEdit there removes it
STYLE = "datasets/world/style_striped.edit.yaml"
LOCOEDIT = {
    "class_path": "LocoEdit",
    "init_args": {"key_tokens": "aligned", "sites": [2, 3], "lambda_k": 0.5, "lambda_v": 0.5},
}
ATTACKS = {
    "ti": {
        "class_path": "TextualInversion",
        "init_args": {"steps": [0, 50, 200], "initializer": "style", "lr": 0.02},
    },
    # scales past 4 leave the images behind (at 8 on the edited model of the world before this
    # one: CLIP 10.6, stripes read on 0.33 of them against 0.42 unattacked): budgets are compared
    # where the images stay images
    "cv": {"class_path": "ConceptVector", "init_args": {"scales": [0, 2, 4]}},
    "prompt": {"class_path": "PromptAttack", "init_args": {"steps": [0, 50, 200], "lr": 0.02}},
}
BUDGETS = {"ti": [0, 50, 200], "cv": [0, 2, 4], "prompt": [0, 50, 200]}
TOLERANCE = 0.125  # one image and a half of the 12 efficacy prompts: the spread over seeds


@pytest.mark.parametrize("family", ["sd1", "sdxl", "if", "pixart", "sd3", "flux"])
def test_the_starting_embeddings_give_every_encoder_the_prompt_itself(family):
    """Textual inversion's slots start from each text encoder's own embeddings of the concept:
    with them in place every family encodes the prompt bit for bit as its pipeline does, and a
    changed vector moves the context (so the hook reaches every encoder)."""
    model = mini_model(family)
    concept = "a cat"  # a word of every miniature's tokenizer, in the test prompts below
    prompts = ["a photo of a cat", "a cat on a mat, a cat"]
    request = EditRequest(concept=concept, target="a dog", templates=("a photo of {}",))
    slots = concept_slots(model, [request], prompts)
    assert len(slots) == len(model.family.text_encoders)
    plain = model.encode(prompts)
    with torch.no_grad(), replaced(slots):
        same = model.encode(prompts)
    assert torch.equal(same.context, plain.context)
    moved = [s.vectors.detach() + 1.0 for s in slots]
    with torch.no_grad(), replaced(slots, moved):
        other = model.encode(prompts)
    assert not torch.allclose(other.context, plain.context)
    attack = PromptAttack(tokens=3, filler="a")  # its prefix is found in every encoder too
    written = attack.written(prompts)
    prefix = attack.slots(model, [request], written)
    assert len(prefix) == len(slots)
    unhooked = model.encode(written).context
    with torch.no_grad(), replaced(prefix):
        assert torch.equal(model.encode(written).context, unhooked)
    with torch.no_grad(), replaced(prefix, [s.vectors.detach() + 1.0 for s in prefix]):
        assert not torch.allclose(model.encode(written).context, unhooked)


@functools.cache
def world():
    return load_model(source=WORLD)


def test_budget_zero_is_the_prompt_itself_and_steps_change_the_embeddings():
    model = world()
    requests = edit_requests(STYLE)
    prompts = [p for p, _, _ in requests[0].pairs()][:4]
    images = torch.rand(len(prompts), 3, 16, 16)
    examples = Examples(tuple(prompts), clean_latents(model, images))
    probe = ["a blue striped square", "one red circle in striped style"]
    plain = model.encode(probe).context
    ti = TextualInversion(steps=(0, 3), batch_size=2).fit(model, requests, examples)
    cv = ConceptVector(scales=(0.0, 1.0)).fit(model, requests, examples)
    assert torch.equal(ti[0](probe).context, plain) and torch.equal(cv[0](probe).context, plain)
    assert not torch.equal(ti[1](probe).context, plain)
    assert not torch.equal(cv[1](probe).context, plain)


@functools.cache
def card() -> tuple[Path, list[dict]]:
    """The attack job on the planted world, run once per process."""
    out = scratch("robustness-") / "attack"
    main(
        [
            "attack",
            "--config",
            "configs/attack/world_style.yaml",
            "--model.diffusion.source",
            WORLD,
            "--model.editors",
            json.dumps({"locoedit": LOCOEDIT}),
            "--model.attacks",
            json.dumps(ATTACKS),
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
        ]
    )
    return out, json.loads((out / "robustness.json").read_text())


@pytest.fixture
def robustness() -> tuple[Path, list[dict]]:
    return card()


def rows(table, method, attack) -> list[dict]:
    return sorted(
        (r for r in table if r["method"] == method and r["attack"] == attack),
        key=lambda r: r["amount"],
    )


def test_the_card_has_a_row_per_method_attack_and_budget_with_every_column(robustness):
    folder, table = robustness
    keys = {(r["method"], r["attack"], r["amount"]) for r in table}
    expected = {(m, a, b) for m in ("unedited", "locoedit") for a in BUDGETS for b in BUDGETS[a]}
    assert keys == expected and len(table) == len(expected)
    columns = {"success", "clip", "success_unattacked", "clip_unattacked", "seconds_to_fit", "n"}
    for r in table:
        assert columns <= r.keys() and all(math.isfinite(r[c]) for c in columns), r
        assert r["n"] == 12
    for name in ("robustness.json", "robustness.csv", "robustness.md", "robustness.png"):
        assert (folder / name).stat().st_size > 0, name
    assert json.loads((folder / "run.json").read_text())["status"] == "complete"


def test_a_zero_budget_attack_recovers_nothing_beyond_the_edited_models_own_rate(robustness):
    _, table = robustness
    for method in ("unedited", "locoedit"):
        cv, ti = rows(table, method, "cv")[0], rows(table, method, "ti")[0]
        assert cv["success"] == cv["success_unattacked"]  # the prompt itself: the same images
        assert ti["success"] <= ti["success_unattacked"] + 1e-9, ti  # "style" for "striped"
        prompt = rows(table, method, "prompt")[0]  # "a a a a a" before the prompt
        assert prompt["success"] <= prompt["success_unattacked"] + TOLERANCE, prompt
    edited = rows(table, "locoedit", "cv")[0]
    assert edited["success_unattacked"] <= rows(table, "unedited", "cv")[0]["success"] - 0.4


def test_textual_inversion_on_the_unedited_model_recovers_the_original_rate(robustness):
    _, table = robustness
    ti = rows(table, "unedited", "ti")
    assert ti[0]["success"] <= ti[0]["success_unattacked"] - 0.4, ti  # the initializer's rate
    assert ti[-1]["success"] >= ti[-1]["success_unattacked"] - TOLERANCE, ti


def test_a_larger_budget_never_does_worse_on_the_same_edit(robustness):
    _, table = robustness
    for method in ("unedited", "locoedit"):
        for attack in BUDGETS:
            success = [r["success"] for r in rows(table, method, attack)]
            assert all(b >= a - TOLERANCE for a, b in zip(success, success[1:])), (method, attack)
            assert success[-1] >= success[0], (method, attack, success)


@pytest.mark.parametrize(
    ("attack", "says"),
    [
        (lambda: TextualInversion(steps=(50, 0)), "ascending"),
        (lambda: TextualInversion(steps=(0, 2.5)), "whole numbers"),
        (lambda: TextualInversion(lr=0.0), "lr=0.0"),
        (lambda: TextualInversion(batch_size=0), "batch_size=0"),
        (lambda: PromptAttack(tokens=0), "tokens=0"),
        (lambda: ConceptVector(scales=(0.0, -1.0)), "scale=[0.0, -1.0]"),
        (lambda: ConceptVector(scales=()), "scale=[]"),
        (lambda: ConceptVector(scales=(0.0, math.inf)), "finite"),
    ],
)
def test_bad_budgets_are_refused_with_the_value(attack, says):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        attack()


def test_a_concept_the_prompts_never_say_and_an_unknown_initializer_are_refused():
    model = mini_model("sd1")
    request = EditRequest(concept="a cat", target="a dog")
    with pytest.raises(ValueError, match="occur in none of the attack's prompts"):
        concept_slots(model, [request], ["a photo of a dog"])
    striped = EditRequest(concept="striped", target="")
    with pytest.raises(ValueError, match="initializer='zqxjv'"):
        concept_slots(world(), [striped], ["a striped circle"], initializer="zqxjv")


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--model.attacks", "{}", "model.attacks is empty"),
        ("--model.attacks", json.dumps({"own": ATTACKS["cv"]}), "'own' names the unattacked rate"),
        ("--model.examples_per_prompt", "0", "examples_per_prompt=0"),
        ("--data.groups", "[specificity]", "has only \\['specificity'\\]"),
        ("--data.edited_by", "{efficacy: []}", "data.edited_by names efficacy"),
    ],
)
def test_the_attack_job_refuses_bad_settings_before_any_work(option, value, says, tmp_path):
    args = ["attack", "--config", "configs/attack/world_style.yaml", option, value]
    args += ["--model.output_dir", str(tmp_path), "--trainer.logger", "false"]
    with pytest.raises(ValueError, match=says):
        main(args)


def test_on_a_model_without_readers_a_classifier_judges_success(tmp_path):
    """On a real model (the SD-1 miniature: no exact readers) the given classifier says where
    an attack succeeded: the unattacked unedited rate is its verdict on the plain images."""
    from loco_lightning.editing.data import load_eval_prompts
    from loco_lightning.models.diffusion import Diffusion
    from loco_lightning.models.sampling import noise_seed

    diffusion = Diffusion(source="miniature", family="sd1", dtype="float32", steps=2)
    model = diffusion.load("cpu")
    prompts = load_eval_prompts("datasets/world/style_striped.eval.yaml")
    efficacy = [p.prompt for p in prompts if p.group == "efficacy"]
    seeds = [noise_seed(0, i, "per_prompt") for i in range(len(efficacy))]
    brightness = diffusion.denoise(model, model.encode(efficacy), seeds).mean((1, 2, 3))
    threshold = float(brightness.median())
    attacks = {"cv": {"class_path": "ConceptVector", "init_args": {"scales": [0, 1]}}}
    args = miniature_job("attack", "configs/attack/world_style.yaml", tmp_path, tmp_path / "tb")
    args += ["--model.diffusion.family", "sd1", "--model.attacks", json.dumps(attacks)]
    args += ["--model.editors", json.dumps({"uce": {"class_path": "UCE"}})]
    args += ["--model.classifier", json.dumps({"class_path": "tests.helpers.Bright"})]
    args += ["--model.classifier.init_args.threshold", str(threshold)]
    main(args)
    table = json.loads((tmp_path / "robustness.json").read_text())
    assert {r["method"] for r in table} == {"unedited", "uce"}
    expected = float((brightness > threshold).double().mean())
    for r in table:
        assert math.isfinite(r["success"]) and math.isfinite(r["success_unattacked"]), r
        if r["method"] == "unedited":
            assert r["success_unattacked"] == pytest.approx(expected), r
