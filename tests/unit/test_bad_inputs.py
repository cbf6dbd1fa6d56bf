"""Bad input is refused at the boundary with one line naming the value and the fix (#14's
catalogue, first part): each case was silently wrong before."""

from __future__ import annotations

import math

import pytest
import torch

from loco_lightning.cli import build
from loco_lightning.editing.locoedit import LocoEditParams, apply_locoedit
from loco_lightning.editing.requests import EditRequest
from loco_lightning.hooks import PromptSwap, intervene
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
        ("edit_k", False, None),  # with edit_v false too: nothing to edit
    ],
)
def test_edit_parameters_that_would_make_a_nan_or_no_model_are_refused(field, value, match):
    extra = {"edit_v": False} if field == "edit_k" else {}
    with pytest.raises(ValueError, match=match or "nothing would be edited"):
        LocoEditParams(sites=(1,), **{field: value}, **extra)


def test_a_site_named_twice_is_refused_before_any_weight_moves():
    model = mini_model("sd1")
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    with pytest.raises(ValueError, match=r"site\(s\) \[1\] more than once in \[1, 1\]"):
        apply_locoedit(model, [STYLE], LocoEditParams(sites=(1, 1)))
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())


def test_a_prompt_swap_naming_a_site_twice_is_refused():
    model = mini_model("sd1")
    with (
        pytest.raises(ValueError, match=r"PromptSwap names site\(s\) \[2\] more than once"),
        intervene(model.unet, [PromptSwap((2, 2), "a house")], encode=model.encode),
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
