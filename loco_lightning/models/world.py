"""LocoWorld models in the real families' own formats: the builders of their untrained parts.

A world is an ordinary diffusers pipeline folder of a supported family (``StableDiffusionPipeline``
for ``sd1``/``sd2``, …) whose components are tiny and trained on LocoWorld. What makes it a world
is only its metadata file (``loco_world.json``: vocabulary, readers, planted windows, sampler
defaults, how it was made) beside ``model_index.json``; plain diffusers ignores it.
"""

from __future__ import annotations

from typing import Literal

import diffusers
from diffusers import SchedulerMixin, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
)

from loco_lightning.models.families import build_pipeline, get_family

TextEncoderKind = Literal["causal", "bidirectional"]

RECORD_NAME = "loco_world.json"  # written beside every exported world model and WorldCLIP
WIDTH = 64  # text-encoder width = the UNets' cross-attention width in every world

# The world-size UNet of each family: the family's block types at LocoWorld's scale (8×8×4
# latents from the world autoencoder, or 16-px pixels). Cross-attention sits at 8×8, 4×4 and the
# 2×2 mid block, as SD-1 keeps it off its lowest resolution: 7 sites.
_SD_WORLD = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": WIDTH,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
}
WORLD_UNETS: dict[str, dict] = {
    "sd1": _SD_WORLD,
    # SD-2: linear projections in and out of each transformer, heads of 8 channels per block
    "sd2": {**_SD_WORLD, "use_linear_projection": True, "attention_head_dim": (4, 8, 8)},
}
# Samplers of each world, as its folder ships them: DDIM over the training betas (SD-2 predicts
# velocity), with SD's "leading" spacing. Latents are not in [-1, 1], so nothing is clipped, and
# then the first step must not start at t = 999: there the cosine schedule leaves sqrt(ᾱ) ≈ 5e-5,
# and the x0 an epsilon model implies is its error times 2e4 (measured on world-sd1: "trailing"
# read colour 0.23, "leading", whose first step is t = 961 with sqrt(ᾱ) ≈ 0.06, read 1.00).
_DDIM = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}
WORLD_SCHEDULERS: dict[str, dict] = {
    "sd1": {**_DDIM, "prediction_type": "epsilon"},
    "sd2": {**_DDIM, "prediction_type": "v_prediction"},
}
WORLD_FILES = {"vocab": "vocab.yaml", "readers": "readers.safetensors"}  # beside loco_world.json
SAMPLING = {"steps": 25, "guidance": 1.5}  # WORLD.md: guidance 3 is bad, 7.5 ruins these models


def _known(family: str, table: dict) -> dict:
    if family not in table:
        raise ValueError(f"no world recipe for family {family!r}; worlds exist for {sorted(table)}")
    return table[family]


def world_unet(family: str = "sd1") -> UNet2DConditionModel:
    """An untrained world-size UNet of ``family``."""
    return UNet2DConditionModel(**_known(family, WORLD_UNETS))


def world_scheduler(family: str = "sd1") -> SchedulerMixin:
    """The sampler a world folder of ``family`` ships."""
    return diffusers.DDIMScheduler(**_known(family, WORLD_SCHEDULERS))


def world_text_encoder(
    tokenizer: PreTrainedTokenizerBase,
    kind: TextEncoderKind = "causal",
    layers: int = 2,
    heads: int = 4,
    width: int = WIDTH,
) -> PreTrainedModel:
    """An untrained text encoder of ``width`` whose positions cover the tokenizer's length.

    ``causal`` is a ``CLIPTextModel`` (each token sees only earlier ones, as in SD's CLIP);
    ``bidirectional`` a ``T5EncoderModel`` (every token sees the whole prompt, as in DeepFloyd's
    T5). Both give their last hidden state as the UNet context.
    """
    length = tokenizer.model_max_length
    if kind == "causal":
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=width,
        )
        return CLIPTextModel(config)
    if kind == "bidirectional":
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=width // heads,
            d_ff=4 * width,
            num_layers=layers,
            num_heads=heads,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=length,
            dropout_rate=0.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        return T5EncoderModel(config)
    raise ValueError(f"text encoder kind {kind!r} is not 'causal' or 'bidirectional'")


def world_pipeline(
    family: str, unet, text_encoder, tokenizer, scheduler, vae=None
) -> diffusers.DiffusionPipeline:
    """The family's own diffusers pipeline around world components (no safety checker)."""
    _known(family, WORLD_UNETS)
    components = {"text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet}
    if vae is not None:
        components["vae"] = vae
    pipe = build_pipeline(get_family(family), scheduler=scheduler, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
