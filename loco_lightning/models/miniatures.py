"""Random-weight miniatures of every family: same block types and pipeline, tiny widths.

They exercise the real loading, encoding and hooking code paths without downloading weights.
"""

from __future__ import annotations

import diffusers
import torch
from diffusers import AutoencoderDC, AutoencoderKL
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    Gemma2Config,
    Gemma2Model,
    T5Config,
    T5EncoderModel,
)

from loco_lightning.models.families import Family, build_denoiser, build_pipeline
from loco_lightning.models.tokenizers import word_tokenizer

MAX_TOKENS = 77


def _clip(tokenizer, hidden: int, projection: int | None = None):
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection or hidden,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _vae(latent: int = 4, **scaling) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=latent,
        norm_num_groups=4,
        sample_size=16,
        **scaling,
    ).eval()


def _t5(tok, width: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tok),
        d_model=width,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return T5EncoderModel(config).eval()


def _dc_vae(latent: int) -> AutoencoderDC:
    """SANA's deep-compression autoencoder, three stages: 32 px images (SanaPipeline takes
    sides that are multiples of 32) to 8 x 8 latents."""
    return AutoencoderDC(
        latent_channels=latent,
        attention_head_dim=4,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=(8, 16, 16),
        decoder_block_out_channels=(8, 16, 16),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), ()),
        decoder_qkv_multiscales=((), (), ()),
        scaling_factor=0.41407,
    ).eval()


def _gemma2(tok, width: int) -> Gemma2Model:
    config = Gemma2Config(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return Gemma2Model(config).eval()


def miniature(family: Family, seed: int = 0) -> diffusers.DiffusionPipeline:
    """A random-weight pipeline of ``family`` whose denoiser has the family's true block layout
    (and so its true site count)."""
    torch.manual_seed(seed)
    net = build_denoiser(family, **family.miniature).eval()
    scheduler = getattr(diffusers, family.scheduler)(**family.scheduler_config)
    tok = word_tokenizer([], MAX_TOKENS, chars=True)
    if family.encoding == "sd3":  # CLIP-L, CLIP-G (pooled, concatenated), T5; SD3's 16-ch VAE
        cfg = family.miniature
        half = cfg["pooled_projection_dim"] // 2
        return build_pipeline(
            family,
            vae=_vae(cfg["in_channels"], scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=_clip(tok, half, projection=half),
            text_encoder_2=_clip(tok, half, projection=half),
            text_encoder_3=_t5(tok, cfg["joint_attention_dim"]),
            tokenizer=tok,
            tokenizer_2=tok,
            tokenizer_3=word_tokenizer([], MAX_TOKENS, chars=True, bos=False),  # as T5's
            transformer=net,
            scheduler=scheduler,
        )
    if family.encoding == "flux":  # CLIP-L pooled, T5 states; FLUX's 16-ch VAE, 4 here
        cfg = family.miniature
        return build_pipeline(
            family,
            # 16 px images: 8 x 8 latents, 16 tokens
            vae=_vae(cfg["in_channels"] // 4, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=_clip(tok, cfg["pooled_projection_dim"]),
            text_encoder_2=_t5(tok, cfg["joint_attention_dim"]),
            tokenizer=tok,
            tokenizer_2=word_tokenizer([], MAX_TOKENS, chars=True, bos=False),  # as T5's
            transformer=net,
            scheduler=scheduler,
        )
    if family.encoding == "gemma":  # Gemma reads SANA's instruction too: a long tokenizer
        tok = word_tokenizer([], 8192, chars=True)
        return build_pipeline(
            family,
            tokenizer=tok,
            text_encoder=_gemma2(tok, family.miniature["caption_channels"]),
            vae=_dc_vae(family.miniature["in_channels"]),
            transformer=net,
            scheduler=scheduler,
        )
    if family.denoiser == "transformer":
        return build_pipeline(
            family,
            tokenizer=tok,
            text_encoder=_t5(tok, family.miniature["caption_channels"]),
            vae=_vae(),
            transformer=net,
            scheduler=scheduler,
        )
    context = family.miniature["cross_attention_dim"]
    if family.name in ("sd1", "sd2"):
        return build_pipeline(
            family,
            vae=_vae(),
            text_encoder=_clip(tok, context),
            tokenizer=tok,
            unet=net,
            scheduler=scheduler,
        )
    if family.name == "sdxl":
        pooled = (
            family.miniature["projection_class_embeddings_input_dim"]
            - 6 * (family.miniature["addition_time_embed_dim"])
        )
        return build_pipeline(
            family,
            vae=_vae(),
            text_encoder=_clip(tok, context - pooled),
            text_encoder_2=_clip(tok, pooled, projection=pooled),
            tokenizer=tok,
            tokenizer_2=tok,
            unet=net,
            scheduler=scheduler,
        )
    if family.name == "if":
        return build_pipeline(
            family,
            tokenizer=tok,
            text_encoder=_t5(tok, family.miniature["encoder_hid_dim"]),
            unet=net,
            scheduler=scheduler,
        )
    raise ValueError(f"No miniature recipe for family {family.name!r}.")
