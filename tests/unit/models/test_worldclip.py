"""WorldCLIP's model side: features from either image convention, FID module, folder round trip."""

import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from loco_lightning.models.worldclip import WorldCLIP, build_worldclip
from loco_lightning.training.world import world_tokenizer


def tiny() -> WorldCLIP:
    torch.manual_seed(0)
    return build_worldclip(world_tokenizer(), width=16, layers=1, heads=2).eval()


def test_features_take_uint8_or_unit_float_images():
    clip = tiny()
    pixels = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        a = clip.image_features(pixels)
        b = clip.image_features(pixels.float() / 255.0)
        t = clip.text_features(["a red circle", "a zorblax", ""])
    assert a.shape == (3, 64) and torch.allclose(a, b, atol=1e-5)
    assert t.shape == (3, 64) and clip.similarity(pixels, ["a red circle"]).shape == (3, 1)


def test_processor_maps_pixels_to_the_training_range():
    clip = tiny()
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    processed = clip.processor(images=list(pixels), return_tensors="pt")["pixel_values"]
    assert torch.allclose(processed, clip.pixel_values(pixels), atol=1e-6)


def test_fid_feature_module_plugs_into_torchmetrics():
    features = tiny().fid_features()
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    real = torch.rand(70, 3, 16, 16)
    fid.update(real, real=True)
    fid.update(real, real=False)
    assert fid.compute().abs() < 1e-2  # same set: distance ~0
    assert features.num_features == 64


def test_folder_round_trip_is_exact(tmp_path):
    clip = tiny()
    clip.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
    loaded = WorldCLIP.from_pretrained(tmp_path)
    pixels = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    texts = ["a red circle", "the emblem of tarnuk"]
    with torch.no_grad():
        assert torch.equal(clip.image_features(pixels), loaded.image_features(pixels))
        assert torch.equal(clip.text_features(texts), loaded.text_features(texts))
