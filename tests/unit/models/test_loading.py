"""Loading: local folders round-trip, missing weights fail with a fix, families are data."""

from __future__ import annotations

import json

import huggingface_hub.constants
import pytest
import torch

from loco_lightning.models import WeightsNotFoundError, get_family, load_model
from loco_lightning.models.pipeline import infer_family
from loco_lightning.models.sampling import denoise


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown model family 'sd4'.*sd1, sd2, sdxl, if"):
        get_family("sd4")


@pytest.mark.parametrize("family", ["sd1", "if"])
def test_saved_pipeline_folder_loads_and_reproduces_images(tmp_path, family):
    model = load_model(family, "miniature")
    model.pipeline.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    loaded = load_model(family, str(tmp_path))
    cond = ["a red circle", "a blue square"]
    a = denoise(model, model.encode(cond), [0, 1], steps=2, guidance=2.0)
    b = denoise(loaded, loaded.encode(cond), [0, 1], steps=2, guidance=2.0)
    assert torch.allclose(a, b, atol=1e-6)


def test_missing_hub_weights_name_the_id_and_the_local_folder_fix(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFoundError) as err:
        load_model("sd1", "nobody/not-a-model")
    message = str(err.value)
    assert "'nobody/not-a-model'" in message and "local diffusers folder" in message
    assert "Traceback" not in message and err.value.__suppress_context__


def test_folder_without_model_index_is_refused(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no model_index.json"):
        load_model("sd1", str(tmp_path))


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "if"])
def test_family_auto_reads_the_folders_model_index(tmp_path, family):
    mini = load_model(family, "miniature")
    mini.pipeline.save_pretrained(tmp_path)
    assert infer_family(str(tmp_path)) == family
    loaded = load_model(source=str(tmp_path))  # family: auto
    assert loaded.family.name == family and loaded.world is None


def test_an_explicit_family_that_contradicts_the_folder_is_refused(tmp_path):
    load_model("sd1", "miniature").pipeline.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="family='sdxl' but .* StableDiffusionPipeline.*auto"):
        load_model("sdxl", str(tmp_path))
    assert load_model("sd1", str(tmp_path)).family.name == "sd1"


def test_auto_without_a_model_index_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="no readable model_index.json.*model.diffusion.family"):
        infer_family(str(tmp_path))
    with pytest.raises(ValueError, match="miniature needs an explicit family"):
        load_model(source="miniature")


def test_an_unsupported_pipeline_class_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "KandinskyPipeline"}')
    with pytest.raises(ValueError, match="KandinskyPipeline folder; supported pipelines are"):
        infer_family(str(tmp_path))


def test_a_tokenizer_without_a_usable_length_is_refused_with_the_fix(tmp_path):
    """A tokenizer saved without model_max_length reports 1e30; SD would overflow padding to it."""
    mini = load_model("sd1", "miniature")
    mini.pipeline.save_pretrained(tmp_path)
    config = tmp_path / "tokenizer" / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("model_max_length", None)
    config.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"no usable model_max_length .*tokenizer_config.json"):
        load_model(source=str(tmp_path))
