"""Causal tracing end to end on miniatures, with known answers."""

from __future__ import annotations

import json

import pytest

from loco_lightning.cli import main
from loco_lightning.localization.causal import text_layers, unet_layers
from loco_lightning.models.tokenizers import concept_positions
from tests.helpers import mini_model, tiny_clip_folder

PAIRS = json.dumps([{"original": "a red striped circle", "target": "a red circle"}])


def trace(tmp_path, *extra) -> list[dict]:
    main(
        [
            "trace",
            "--config",
            "configs/trace/sd1_style.yaml",
            "--model.diffusion.family",
            "sdxl",
            "--model.diffusion.source",
            "miniature",
            "--model.diffusion.dtype",
            "float32",
            "--model.clip",
            tiny_clip_folder(),
            "--model.diffusion.steps",
            "3",
            "--trainer.accelerator",
            "cpu",
            "--data.pairs",
            PAIRS,
            "--model.output_dir",
            str(tmp_path / "out"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "tb"),
            *extra,
        ]
    )
    return json.loads((tmp_path / "out" / "layers.json").read_text())


def test_layers_are_listed_in_execution_order():
    model = mini_model("sd1")
    layers = unet_layers(model.denoiser)
    paths = [p for p, _ in layers]
    assert paths[0] == "down_blocks.0.resnets.0"
    first_mid = next(i for i, p in enumerate(paths) if p.startswith("mid_block"))
    assert all(p.startswith("down_blocks") for p in paths[:first_mid])
    mid = 5  # resnet, self-attention, cross-attention, feed-forward, resnet
    assert all(p.startswith("up_blocks") for p in paths[first_mid + mid :])
    assert {k for _, k in layers} == {"resnet", "self_attn", "cross_attn", "ff"}
    assert len(text_layers(model.pipeline, ("text_encoder",))) == 4  # 2 layers x (attn, mlp)


def test_concept_tokens_are_what_the_target_lacks():
    tok = mini_model("sd1").tokens  # miniatures: one token per character
    assert concept_positions(tok, "ab c", "a c") == [2]
    with pytest.raises(ValueError, match="same tokens"):
        concept_positions(tok, "a c", "a c")


def test_trace_has_one_row_per_layer_and_the_last_unet_layer_restores_exactly(tmp_path):
    table = trace(tmp_path)
    model = mini_model("sdxl")
    n_layers = len(unet_layers(model.denoiser)) + len(
        text_layers(model.pipeline, model.family.text_encoders)
    )
    assert len(table) == 2 + n_layers
    rows = {r["layer"]: r for r in table}
    clean, corrupted = rows["clean"]["clip_mean"], rows["corrupted"]["clip_mean"]
    assert abs(clean - corrupted) > 1e-3  # the corruption changed the image
    # SD-XL's UNet ends in a ResNet whose output alone decides the noise prediction, so
    # restoring it at every step replays the clean trajectory exactly.
    path, kind = unet_layers(model.denoiser)[-1]
    assert kind == "resnet"
    last = rows[path]
    assert last["clip_mean"] == pytest.approx(clean, abs=1e-3)
    assert last["recovery_mean"] == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "out" / "layers_recovery.png").exists()


def test_zero_noise_changes_nothing(tmp_path):
    table = trace(tmp_path, "--model.noise_scale", "0")
    clean = table[0]["clip_mean"]
    assert all(r["clip_mean"] == pytest.approx(clean, abs=1e-3) for r in table)
    assert all("recovery_mean" not in r for r in table)  # no gap, no recovery to report
