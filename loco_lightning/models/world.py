"""LocoWorld models in the real families' own formats: the builders of their untrained parts.

A world is an ordinary diffusers pipeline folder of a supported family (``StableDiffusionPipeline``
for ``sd1``/``sd2``, …) whose components are tiny and trained on LocoWorld. What makes it a world
is only its metadata file (``loco_world.json``: vocabulary, readers, planted windows, sampler
defaults, how it was made) beside ``model_index.json``; plain diffusers ignores it.
"""

from __future__ import annotations

from typing import Literal

import diffusers
from diffusers import SchedulerMixin
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
)

from loco_lightning.models.families import build_denoiser, build_pipeline, get_family

TextEncoderKind = Literal["causal", "bidirectional"]
WorldFamily = Literal["sd1", "sd2", "sdxl", "if", "pixart", "sd3", "flux"]

RECORD_NAME = "loco_world.json"  # written beside every exported world model and WorldCLIP
WIDTH = 64  # text-encoder width = the UNets' cross-attention width in every world
CAPTION_TOKENS = 16  # the world tokenizer's length: every world caption fits, with BOS and EOS

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
WIDTH_SDXL = (32, 64)  # SD-XL's two text encoders (CLIP-L 768 ‖ bigG 1280), concatenated
TIME_EMBED_SDXL = 8  # per size/crop number of SD-XL's six ``time_ids``
WIDTH_SD3_T5 = sum(WIDTH_SDXL)  # SD3 pads CLIP-L ‖ CLIP-G to T5's width (4096) beside T5's rows
# The transformer worlds' shared layout: 7 blocks of 4 heads x 16 on the world autoencoder's
# 8x8x4 latents, one token per latent pixel (patch 1: 64 tokens)
_DIT_WORLD = {
    "sample_size": 8,
    "patch_size": 1,
    "in_channels": 4,
    "out_channels": 4,
    "num_layers": 7,
    "num_attention_heads": 4,
    "attention_head_dim": 16,
}
WORLD_DENOISERS: dict[str, dict] = {
    "sd1": _SD_WORLD,
    # SD-2: linear projections in and out of each transformer, heads of 8 channels per block
    "sd2": {**_SD_WORLD, "use_linear_projection": True, "attention_head_dim": (4, 8, 8)},
    # SD-XL: no attention at the finest level, a stack of transformer layers per attention in the
    # deeper ones (SD-XL's (1, 2, 10) with two resnets per level, 70 sites, here (-, 2, 3) with
    # one: 18 sites, the up path's first block the deep one, sites 8-13), pooled text_embeds and
    # time_ids through the text-time embedding
    "sdxl": {
        **_SD_WORLD,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 3),
        "use_linear_projection": True,
        "attention_head_dim": (4, 8, 8),
        "cross_attention_dim": sum(WIDTH_SDXL),
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TIME_EMBED_SDXL,
        "projection_class_embeddings_input_dim": WIDTH_SDXL[1] + 6 * TIME_EMBED_SDXL,
    },
    # DeepFloyd IF stage I: pixel space (16 px), learned variance (6 output channels), attention
    # over the image tokens with the text's keys/values added (add_k_proj/add_v_proj) at 8x8 and
    # 4x4, the T5 states projected by encoder_hid_proj and pooled into the time embedding: 7 sites
    "if": {
        **get_family("if").denoiser_config,  # IF's block kinds, text path and resnet settings
        "sample_size": 16,
        "layers_per_block": 1,
        # (16, 32, 64) was 1.8x faster per step but had learned colour 0.49, style 0.60 by step
        # 4,000 (the text conditioning came slowly): the SD worlds' widths (the shipped world
        # narrows the 8 and 4 px levels to 48 in its config, configs/world/if_planted.yaml)
        "block_out_channels": (32, 64, 64),
        "down_block_types": (
            "ResnetDownsampleBlock2D",
            "SimpleCrossAttnDownBlock2D",
            "SimpleCrossAttnDownBlock2D",
        ),
        "up_block_types": (
            "SimpleCrossAttnUpBlock2D",
            "SimpleCrossAttnUpBlock2D",
            "ResnetUpsampleBlock2D",
        ),
        "attention_head_dim": 16,
        "cross_attention_dim": WIDTH,
        "encoder_hid_dim": WIDTH,
        "addition_embed_type_num_heads": 4,
        "norm_num_groups": 16,
    },
    # PixArt-α: a diffusion transformer on the world autoencoder's 8×8×4 latents, one token per
    # latent pixel (patch 1: 64 tokens), 7 blocks, each with a cross-attention on the T5 states
    # (after the caption projection): 7 sites, as the SD worlds; no learned variance
    "pixart": {
        **get_family("pixart").denoiser_config,
        **_DIT_WORLD,
        "cross_attention_dim": WIDTH,
        "caption_channels": WIDTH,
    },
    # SD3: 7 joint-attention blocks (the last one's text stream not updated, as in SD3) on the
    # world autoencoder's latents, one token per latent pixel, the text stream CLIP-L ‖ CLIP-G
    # beside T5 (16 + 16 rows), pooled CLIP-L ‖ CLIP-G into the time embedding: 7 sites
    "sd3": {
        **get_family("sd3").denoiser_config,
        **_DIT_WORLD,
        "joint_attention_dim": WIDTH_SD3_T5,
        "caption_projection_dim": 64,
        "pooled_projection_dim": sum(WIDTH_SDXL),
        "pos_embed_max_size": 8,
    },
    # FLUX.1: the world autoencoder's 8x8x4 latents packed 2x2 into 16 tokens of 16 channels,
    # 4 double-stream (joint) blocks then 3 single-stream (fused) ones: 7 sites; the text stream
    # T5's 16 rows, pooled CLIP-L and the guidance scale into the time embedding (told, as
    # FLUX.1-dev is: the world is trained with the scale it samples at, no unconditional branch)
    "flux": {
        **get_family("flux").denoiser_config,
        "in_channels": 16,
        "num_layers": 4,
        "num_single_layers": 3,
        "num_attention_heads": 4,
        "attention_head_dim": 16,
        "joint_attention_dim": WIDTH,
        "pooled_projection_dim": WIDTH,
        "axes_dims_rope": (4, 6, 6),
    },
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
# Flow-matching worlds sample with FlowMatchEuler, unshifted: the shift SD3 uses at 1024 px moves
# steps toward the noise that so many tokens need, which 64 latent pixels do not.
# IF samples with its own DDPM (learned-range variance, dynamic thresholding of the predicted
# image, which pixel space allows).
WORLD_SCHEDULERS: dict[str, tuple[str, dict]] = {
    "sd1": ("DDIMScheduler", {**_DDIM, "prediction_type": "epsilon"}),
    "sd2": ("DDIMScheduler", {**_DDIM, "prediction_type": "v_prediction"}),
    "sdxl": ("DDIMScheduler", {**_DDIM, "prediction_type": "epsilon"}),
    "pixart": ("DDIMScheduler", {**_DDIM, "prediction_type": "epsilon"}),
    "sd3": ("FlowMatchEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": 1.0}),
    "flux": ("FlowMatchEulerDiscreteScheduler", {"num_train_timesteps": 1000, "shift": 1.0}),
    "if": (
        "DDPMScheduler",
        {
            "num_train_timesteps": 1000,
            "beta_schedule": "squaredcos_cap_v2",
            "timestep_spacing": "leading",
            "steps_offset": 1,
            "prediction_type": "epsilon",
            "variance_type": "learned_range",
            "thresholding": True,
            "dynamic_thresholding_ratio": 0.95,
            "sample_max_value": 1.5,
        },
    ),
}
# Pipeline settings a world sets: SD-XL's unconditional branch is the encoded empty prompt, as the
# world is trained (10% empty captions) and as the project's sampler builds it, not zeros.
WORLD_PIPELINE_OPTIONS: dict[str, dict] = {"sdxl": {"force_zeros_for_empty_prompt": False}}
# The shared autoencoder's settings a family's pipeline reads: SD3 decodes latents / scale + shift
# (FLUX too) and fails on the world autoencoder's shift_factor None.
WORLD_VAE_CONFIG: dict[str, dict] = {"sd3": {"shift_factor": 0.0}, "flux": {"shift_factor": 0.0}}
WORLD_FILES = {"vocab": "vocab.yaml", "readers": "readers.safetensors"}  # beside loco_world.json
WORLD_SCORER = "worldclip"  # the CLIP trained on the world's captions scores its images
SAMPLING = {"steps": 25, "guidance": 1.5}  # WORLD.md: guidance 3 is bad, 7.5 ruins these models


def _known(family: str, table: dict) -> dict:
    if family not in table:
        raise ValueError(f"no world recipe for family {family!r}; worlds exist for {sorted(table)}")
    return table[family]


def world_denoiser(family: str = "sd1", **overrides):
    """An untrained world-size denoiser of ``family`` (a UNet, or PixArt's transformer), with
    ``overrides`` of its diffusers config (e.g. ``attention_head_dim``) for a world's own recipe."""
    return build_denoiser(get_family(family), **{**_known(family, WORLD_DENOISERS), **overrides})


def world_scheduler(family: str = "sd1") -> SchedulerMixin:
    """The sampler a world folder of ``family`` ships."""
    name, config = _known(family, WORLD_SCHEDULERS)
    return getattr(diffusers, name)(**config)


def world_text_encoder(
    tokenizer: PreTrainedTokenizerBase,
    kind: TextEncoderKind = "causal",
    layers: int = 2,
    heads: int = 4,
    width: int = WIDTH,
    projection: bool = False,
) -> PreTrainedModel:
    """An untrained text encoder of ``width`` whose positions cover the tokenizer's length.

    ``causal`` is a ``CLIPTextModel`` (each token sees only earlier ones, as in SD's CLIP; with
    ``projection``, a ``CLIPTextModelWithProjection`` whose projected EOS state is SD-XL's pooled
    embedding); ``bidirectional`` a ``T5EncoderModel`` (every token sees the whole prompt, as in
    DeepFloyd's T5).
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
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    if kind == "bidirectional":
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=width,
            d_kv=width // heads,
            d_ff=4 * width,
            num_layers=layers,
            num_heads=heads,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=CAPTION_TOKENS,  # IF pads to 77: beyond, one bucket
            dropout_rate=0.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = T5EncoderModel(config)
        # T5's position bias sends SDPA down its masked math path on CPU; plain attention is the
        # same numbers 1.4x faster (the exported config does not keep the choice)
        model.set_attn_implementation("eager")
        return model
    raise ValueError(f"text encoder kind {kind!r} is not 'causal' or 'bidirectional'")


# The text encoders of each world, by pipeline component: (kind, width, projection)
WORLD_TEXT_ENCODERS: dict[str, dict[str, tuple[TextEncoderKind, int, bool]]] = {
    "sd1": {"text_encoder": ("causal", WIDTH, False)},
    "sd2": {"text_encoder": ("causal", WIDTH, False)},
    "sdxl": {
        "text_encoder": ("causal", WIDTH_SDXL[0], False),
        "text_encoder_2": ("causal", WIDTH_SDXL[1], True),
    },
    "if": {"text_encoder": ("bidirectional", WIDTH, False)},
    "pixart": {"text_encoder": ("bidirectional", WIDTH, False)},
    "sd3": {
        "text_encoder": ("causal", WIDTH_SDXL[0], True),
        "text_encoder_2": ("causal", WIDTH_SDXL[1], True),
        "text_encoder_3": ("bidirectional", WIDTH_SD3_T5, False),
    },
    "flux": {
        "text_encoder": ("causal", WIDTH, False),
        "text_encoder_2": ("bidirectional", WIDTH, False),
    },
}


def world_text_encoders(
    family: str, tokenizers: dict[str, PreTrainedTokenizerBase], layers: int = 2, heads: int = 4
) -> dict[str, PreTrainedModel]:
    """The untrained text encoders of ``family``'s world, by pipeline component name
    (``text_encoder`` reads ``tokenizer``, ``text_encoder_2`` reads ``tokenizer_2``)."""
    return {
        name: world_text_encoder(
            tokenizers[name.replace("text_encoder", "tokenizer")], kind, layers, heads, width, proj
        )
        for name, (kind, width, proj) in _known(family, WORLD_TEXT_ENCODERS).items()
    }


def world_pipeline(
    family: str,
    denoiser,
    text_encoders: dict,
    tokenizers: dict,
    scheduler,
    vae=None,
) -> diffusers.DiffusionPipeline:
    """The family's own diffusers pipeline around world components (no safety checker)."""
    _known(family, WORLD_DENOISERS)
    components = {**text_encoders, **tokenizers, get_family(family).denoiser: denoiser}
    if vae is not None:
        components["vae"] = vae
    options = WORLD_PIPELINE_OPTIONS.get(family, {})
    pipe = build_pipeline(get_family(family), scheduler=scheduler, **components, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe
