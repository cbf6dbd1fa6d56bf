"""Bad input is refused at the boundary with one line naming the value and the fix (#14's
catalogue, first part): each case was silently wrong before."""

from __future__ import annotations

import math

import pytest
import torch

from loco_lightning.cli import build
from loco_lightning.data.prompts import PromptPair
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.requests import EditRequest, key_positions
from loco_lightning.hooks import NeuronAblation, PromptSwap, intervene
from loco_lightning.localization.data import WindowSweepData, sweep_items
from loco_lightning.localization.locogen import LocalizationModule
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.sampling import denoise
from tests.helpers import mini_model

STYLE = EditRequest("Van Gogh", "a painting", ("{}", "a painting in the style of {}"))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("lambda_k", math.inf, "lambda_k=inf"),
        ("lambda_k", math.nan, "lambda_k=nan"),
        ("lambda_v", 0.0, "lambda_v=0.0"),
        ("lambda_v", -1.0, "lambda_v=-1.0"),
        ("preserve_scale", math.nan, "preserve_scale=nan"),
        ("preserve_scale", -0.5, "preserve_scale=-0.5"),
    ],
)
def test_edit_parameters_that_would_make_a_nan_model_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        LocoEdit(sites=(1,), **{field: value})


def test_a_site_named_twice_is_refused_before_any_weight_moves():
    model = mini_model("sd1")
    before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    with pytest.raises(ValueError, match=r"site\(s\) \[1\] more than once in \[1, 1\]"):
        LocoEdit(sites=(1, 1)).compute(model, [STYLE])
    assert all(torch.equal(v, before[k]) for k, v in model.denoiser.state_dict().items())


def test_a_prompt_swap_naming_a_site_twice_is_refused():
    model = mini_model("sd1")
    with (
        pytest.raises(ValueError, match=r"PromptSwap names site\(s\) \[2\] more than once"),
        intervene(model.denoiser, [PromptSwap((2, 2), "a house")], encode=model.encode),
    ):
        pass


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("steps", 0, "steps=0"),
        ("steps", -3, "steps=-3"),
        ("guidance", math.nan, "guidance=nan"),
        ("guidance", -2.0, "guidance=-2.0"),
        ("guidance", math.inf, "guidance=inf"),
    ],
)
def test_sampler_settings_that_were_silently_replaced_are_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        Diffusion(**{field: value})
    model = mini_model("sd1")
    with pytest.raises(ValueError, match=match):
        denoise(model, model.encode(["a house"]), [0], **{field: value})


def test_the_cli_refuses_zero_steps_when_the_config_is_read():
    with pytest.raises(ValueError, match=r"model\.diffusion\.steps=0: give .* >= 1"):
        build(
            "localize",
            ["--config", "configs/localize/world_shape.yaml", "--model.diffusion.steps", "0"],
            run=False,
        )


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--model.decide_at", "0", r"model\.decide_at=0\.0: give the fraction"),
        ("--model.decide_at", "1.5", r"model\.decide_at=1\.5: give the fraction"),
        ("--model.racing", "{first: 0}", r"model\.racing\.first=0"),
        ("--model.racing", "{grow: 1}", r"model\.racing\.grow=1: give an integer >= 2"),
        ("--model.racing", "{drop: -0.1}", r"model\.racing\.drop=-0\.1"),
        ("--data.batch_size", "0", r"data\.batch_size=0: give at least 1, or auto"),
    ],
)
def test_cheaper_sweep_settings_that_would_skip_or_break_the_sweep_are_refused(
    option, value, match
):
    with pytest.raises(ValueError, match=match):
        build("localize", ["--config", "configs/localize/world_shape.yaml", option, value], False)


def test_a_key_token_mode_typo_is_refused_instead_of_running_as_another_mode():
    tok = mini_model("sd1").tokens
    with pytest.raises(ValueError, match=r"key_tokens='last_subjct': choose one of"):
        key_positions(tok, [("ab c", "a c", "a c")], "last_subjct")


def test_a_negative_neuron_is_refused_instead_of_wrapping_around():
    with pytest.raises(ValueError, match=r"neurons=\[3, -1\].*wrap around"):
        NeuronAblation((1,), (3, -1))
    with pytest.raises(ValueError, match=r"neurons=\[\]"):
        NeuronAblation((1,), ())


@pytest.mark.parametrize(
    ("original", "target", "match"),
    [
        ("a red circle", "a red circle", "original == target"),
        ("a red circle", " a red circle ", "original == target"),
        ("  ", "a circle", "empty original"),
    ],
)
def test_a_pair_that_removes_nothing_is_refused(original, target, match):
    with pytest.raises(ValueError, match=match):
        PromptPair(original, target)


@pytest.mark.parametrize(
    ("sizes", "seeds", "match"),
    [
        ([], [0], r"data\.window_sizes is empty"),
        ([1, 1], [0], r"data\.window_sizes=\[1, 1\] repeats \[1\]"),
        ([0, 2], [0], r"data\.window_sizes=\[0, 2\]: \[0\] outside 1"),
        ([1], [], r"data\.seeds is empty"),
        ([1], [3, 3], r"data\.seeds=\[3, 3\] repeats \[3\]"),
        ([1], [-1], r"data\.seeds=\[-1\]: \[-1\] outside 0"),
    ],
)
def test_sweep_lists_that_would_select_from_nothing_or_count_twice_are_refused(sizes, seeds, match):
    pairs = [PromptPair("a red circle", "a circle")]
    with pytest.raises(ValueError, match=match):
        WindowSweepData(pairs, window_sizes=sizes, seeds=seeds)


def test_a_window_larger_than_the_model_is_refused_with_its_site_count():
    pairs = [PromptPair("a red circle", "a circle")]
    with pytest.raises(ValueError, match=r"data\.window_sizes=\[2, 9\]: \[9\] outside 1\.\.7"):
        sweep_items(pairs, 7, [2, 9], [0])


@pytest.mark.parametrize("margin", [-1.0, math.nan, math.inf])
def test_a_selection_margin_that_selects_nothing_is_refused(margin):
    with pytest.raises(ValueError, match=f"model.margin={margin}"):
        LocalizationModule(margin=margin)


def test_evaluation_groups_keep_their_noise_and_an_empty_choice_is_refused():
    from loco_lightning.editing.data import EditEvalData

    full = EditEvalData("datasets/world/style_striped.eval.yaml")
    some = EditEvalData("datasets/world/style_striped.eval.yaml", groups=["specificity"])
    assert some.groups == ["specificity"]
    noise = {(it.prompt.prompt, it.seed): it.noise_seed for it in full.items()}
    assert all(noise[(it.prompt.prompt, it.seed)] == it.noise_seed for it in some.items())
    with pytest.raises(ValueError, match=r"data.groups=\['reference'\] keeps no prompt"):
        EditEvalData("datasets/edit_van_gogh.yaml", groups=["reference"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concept": " ", "target": "a painting"}, "the concept is empty"),
        ({"concept": "Monet", "target": " Monet"}, "concept == target"),
        ({"concept": "Monet", "target": "", "templates": ()}, "templates is empty"),
        ({"concept": "Monet", "target": "", "templates": ("a garden",)}, r"\['a garden'\]"),
        ({"concept": "Monet", "target": "", "templates": ("{} {}",)}, "exactly once"),
        (
            {"concept": "Monet", "target": "a", "templates": ("{}",), "target_templates": ()},
            "1 templates but 0 target_templates",
        ),
    ],
)
def test_an_edit_request_that_would_edit_nothing_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EditRequest(**kwargs)


def test_words_the_tokenizer_reads_as_unknown_are_refused_naming_them():
    model = mini_model("sd1")  # one token per printable ASCII character
    with pytest.raises(ValueError, match=r"\['café', 'Zürich'\] not in the vocabulary"):
        model.encode(["a house", "a café in Zürich"])
    model.encode(["a house, in the style of Van Gogh!"])  # every character is known


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(FileExistsError, match=r"model\.output_dir='.*out' is a file"):
        LocalizationModule(output_dir=str(tmp_path / "out"))
    assert (tmp_path / "out").read_text() == "mine"


def test_text_encoder_methods_refuse_sanas_instructed_prompts():
    """SANA's text encoder reads its instruction before the prompt: the prompt's token positions
    are not the encoder's, so causal tracing and quickfix refuse instead of corrupting the
    instruction's tokens."""
    from loco_lightning.editing.quickfix import QuickFix

    model = mini_model("sana")
    match = "'sana' puts an instruction before every prompt"
    with pytest.raises(ValueError, match=match):
        model.encoder_tokens()
    request = EditRequest("Van Gogh", "a painting")
    with pytest.raises(ValueError, match=match):
        QuickFix(layer="layers.0.mlp.fc1", keep_empty=False).compute(model, [request])


@pytest.mark.parametrize("family", ["sana", "sd3"])
def test_fine_tuning_baselines_refuse_flow_matching_models(tmp_path, family):
    """ESD and Concept Ablation noise with DDPM; on a flow model that would train silently
    towards the wrong target."""
    from tests.unit.baselines.test_finetune import fit

    with pytest.raises(ValueError, match="flow-matching one"):
        fit("esd", tmp_path, 2, "--model.diffusion.family", family)


@pytest.mark.parametrize("family", ["pixart", "sd3"])
def test_rece_refuses_models_whose_sites_do_not_read_the_context_unchanged(family):
    from loco_lightning.editing.published import RECE

    with pytest.raises(ValueError, match="RECE's closed-form embedding needs sites"):
        RECE(sites="all").compute(mini_model(family), [EditRequest("striped", "")])
