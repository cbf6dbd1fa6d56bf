"""Loading: local folders round-trip, missing weights fail with a fix, families are data."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from loco_lightning.models import WeightsNotFoundError, get_family, load_model
from loco_lightning.models.sampling import denoise


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown model family 'sd3'.*sd1, sd2, sdxl, if, world"):
        get_family("sd3")


@pytest.mark.parametrize("family", ["world", "sd1"])
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
