"""The denoisers text enters, as far as the hooks care: a UNet, a diffusion transformer whose
blocks read the caption through cross-attention (PixArt, SANA), or one whose blocks attend jointly
over image and text streams (SD3).

Each kind says how to call the model, what its sites read (the text context after the model's
own caption projection, before each attention's ``norm_cross``), and its smallest valid inputs (to
trace the sites' execution order). Everything else (sites, processors, the executor, the editors)
is the same for both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Kind:
    """What every kind shares: a call is the model on its kind's ``inputs``; latents are drawn
    as ``noise_shape`` and denoised as ``pack`` lays them out."""

    @classmethod
    def forward(cls, module, x: Tensor, t, context: Tensor, added, mask) -> Tensor:
        return module(**cls.inputs(module, x, t, context, added, mask)).sample

    @staticmethod
    def latent_channels(module: nn.Module) -> int:
        """Channels of the latents before ``pack``."""
        return module.config.in_channels

    @classmethod
    def noise_shape(cls, module: nn.Module, pipe) -> tuple[int, int, int]:
        """(C, H, W) of one starting noise, as the pipeline draws it."""
        side = module.config.sample_size
        return (cls.latent_channels(module), side, side)

    @staticmethod
    def pack(x: Tensor) -> Tensor:
        """The latents as the denoiser and the sampler take them."""
        return x

    @staticmethod
    def unpack(x: Tensor, pipe) -> Tensor:
        """Packed latents back to (B, C, H, W) for the autoencoder."""
        return x


class UNetKind(Kind):
    """``UNet2DConditionModel`` (SD-1/2, SD-XL, DeepFloyd IF)."""

    @staticmethod
    def context_width(module: nn.Module) -> int:
        """Width of ``encoder_hidden_states`` it takes (before IF's ``encoder_hid_proj``)."""
        width = module.config.encoder_hid_dim or module.config.cross_attention_dim
        return width[0] if isinstance(width, (list, tuple)) else width

    @staticmethod
    def text_states(module: nn.Module, context: Tensor, added: dict | None) -> Tensor:
        return module.process_encoder_hidden_states(context, added or {})

    @staticmethod
    def inputs(module, x: Tensor, t, context: Tensor, added, mask) -> dict:
        """The keyword arguments of one call on latents ``x`` at timestep ``t``."""
        return {
            "sample": x,
            "timestep": t,
            "encoder_hidden_states": context,
            "added_cond_kwargs": added,
        }

    @staticmethod
    def trace_inputs(module: nn.Module, batch: int = 1, size: int | None = None) -> dict:
        """Zero inputs of the right shapes (``size``: latent side, default the smallest)."""
        cfg = module.config
        param = next(module.parameters())
        device, dtype = param.device, param.dtype
        size = size or 2 ** len(cfg.block_out_channels)
        zeros = dict(device=device, dtype=dtype)
        width = UNetKind.context_width(module)
        kwargs = {
            "sample": torch.zeros(batch, cfg.in_channels, size, size, **zeros),
            "timestep": torch.tensor(1, device=device),
            "encoder_hidden_states": torch.zeros(batch, 4, width, **zeros),
        }
        if cfg.addition_embed_type == "text_time":
            n_time = 6
            pooled = (
                cfg.projection_class_embeddings_input_dim - n_time * cfg.addition_time_embed_dim
            )
            kwargs["added_cond_kwargs"] = {
                "text_embeds": torch.zeros(batch, pooled, **zeros),
                "time_ids": torch.zeros(batch, n_time, **zeros),
            }
        elif cfg.addition_embed_type not in (None, "text"):
            raise ValueError(
                f"UNet addition_embed_type={cfg.addition_embed_type!r} is not supported for site "
                "tracing; supported: None (SD-1/2), 'text_time' (SD-XL), 'text' (DeepFloyd IF)."
            )
        if cfg.class_embed_type is not None or cfg.num_class_embeds is not None:
            kwargs["class_labels"] = torch.zeros(batch, dtype=torch.long, device=device)
        return kwargs


class TransformerKind(Kind):
    """What the diffusion transformers share: patchified latents in ``hidden_states``, the
    caption in ``encoder_hidden_states``, one timestep per row; each kind adds its own inputs."""

    @classmethod
    def inputs(cls, module, x: Tensor, t, context: Tensor, added, mask) -> dict:
        timestep = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        return {
            "hidden_states": x,
            "encoder_hidden_states": context,
            "timestep": timestep,
            **cls.extra(module, timestep, added, mask),
        }

    @staticmethod
    def extra(module, timestep: Tensor, added, mask) -> dict:
        """The kind's own call inputs beside latents, caption and timestep."""
        return {}

    @classmethod
    def trace_inputs(cls, module: nn.Module, batch: int = 1, size: int | None = None) -> dict:
        """Zero inputs of the right shapes (``size``: latent side, default one 2×2 patch grid)."""
        cfg = module.config
        param = next(module.parameters())
        zeros = dict(device=param.device, dtype=param.dtype)
        size = size or cfg.patch_size * 2
        x = cls.pack(torch.zeros(batch, cls.latent_channels(module), size, size, **zeros))
        context = torch.zeros(batch, 4, cls.context_width(module), **zeros)
        return cls.inputs(module, x, 1, context, cls.trace_added(module, batch, zeros), None)

    @staticmethod
    def trace_added(module: nn.Module, batch: int, zeros: dict) -> dict | None:
        return None


class CaptionDiTKind(TransformerKind):
    """A diffusion transformer with a caption projection and a cross-attention ``attn2`` per
    block (``PixArtTransformer2DModel``: PixArt-α and -Σ). The caption's padding is masked
    (``encoder_attention_mask``), so a swapped-in prompt brings its own mask (see
    :class:`~loco_lightning.hooks.processors.SiteProcessor`)."""

    @staticmethod
    def context_width(module: nn.Module) -> int:
        return module.config.caption_channels

    @staticmethod
    def text_states(module: nn.Module, context: Tensor, added: dict | None) -> Tensor:
        return module.caption_projection(context)

    @staticmethod
    def extra(module, timestep: Tensor, added, mask) -> dict:
        no_size = {"resolution": None, "aspect_ratio": None}
        return {"encoder_attention_mask": mask, "added_cond_kwargs": added or no_size}

    @staticmethod
    def trace_added(module: nn.Module, batch: int, zeros: dict) -> dict | None:
        if not module.use_additional_conditions:
            return None
        return {  # PixArt-α 1024: image size and aspect ratio
            "resolution": torch.ones(batch, 2, **zeros),
            "aspect_ratio": torch.ones(batch, 1, **zeros),
        }


class SanaKind(CaptionDiTKind):
    """``SanaTransformer2DModel``: PixArt's layout, with the projected caption RMS-normalised
    before the blocks read it, no size conditioning, and timesteps scaled by
    ``timestep_scale`` as ``SanaPipeline`` scales them."""

    @staticmethod
    def text_states(module: nn.Module, context: Tensor, added: dict | None) -> Tensor:
        return module.caption_norm(module.caption_projection(context))

    @classmethod
    def inputs(cls, module, x: Tensor, t, context: Tensor, added, mask) -> dict:
        out = super().inputs(module, x, t, context, added, mask)
        return {**out, "timestep": out["timestep"] * module.config.timestep_scale}

    @staticmethod
    def extra(module, timestep: Tensor, added, mask) -> dict:
        return {"encoder_attention_mask": mask}

    @staticmethod
    def trace_added(module: nn.Module, batch: int, zeros: dict) -> dict | None:
        return None


class JointDiTKind(TransformerKind):
    """``SD3Transformer2DModel``: joint attention. The caption, embedded by ``context_embedder``,
    is a second stream every block updates beside the image; each block's attention reads the
    text stream's keys and values through ``add_k_proj``/``add_v_proj`` (its sites). Pooled CLIP
    embeddings enter every block's modulation through ``pooled_projections``."""

    @staticmethod
    def context_width(module: nn.Module) -> int:
        return module.config.joint_attention_dim

    @staticmethod
    def text_states(module: nn.Module, context: Tensor, added: dict | None) -> Tensor:
        """The text stream entering the first block (later blocks read it as updated)."""
        return module.context_embedder(context)

    @staticmethod
    def extra(module, timestep: Tensor, added, mask) -> dict:
        return {"pooled_projections": added["pooled_projections"]}

    @staticmethod
    def trace_added(module: nn.Module, batch: int, zeros: dict) -> dict | None:
        width = module.config.pooled_projection_dim
        return {"pooled_projections": torch.zeros(batch, width, **zeros)}


class FluxKind(JointDiTKind):
    """``FluxTransformer2DModel``: joint attention in 19 double-stream blocks (text first, rotary
    embeddings), then 38 single-stream blocks over the fused [text; image] sequence. Latents
    are packed 2 x 2 into tokens; the timestep goes in divided by 1000, and FLUX.1-dev's
    guidance scale as an input (``added["guidance"]``)."""

    @staticmethod
    def latent_channels(module: nn.Module) -> int:
        return module.config.in_channels // 4  # 2 x 2 latent pixels per token

    @classmethod
    def noise_shape(cls, module: nn.Module, pipe) -> tuple[int, int, int]:
        # the autoencoder's own size (FLUX.1's: 1024 px), an even number of latent pixels;
        # FluxPipeline's default_sample_size is fixed at 128 latent pixels whatever the model
        side = 2 * (pipe.vae.config.sample_size // (pipe.vae_scale_factor * 2))
        return (cls.latent_channels(module), side, side)

    @staticmethod
    def pack(x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // 2) * (w // 2), c * 4)

    @staticmethod
    def unpack(x: Tensor, pipe) -> Tensor:
        b, n, c = x.shape
        side = int(round(n**0.5))
        x = x.view(b, side, side, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c // 4, side * 2, side * 2)

    @classmethod
    def inputs(cls, module, x: Tensor, t, context: Tensor, added, mask) -> dict:
        out = super().inputs(module, x, t, context, added, mask)
        side = int(round(x.shape[1] ** 0.5))
        image = torch.zeros(side, side, 3, device=x.device, dtype=x.dtype)
        image[..., 1] += torch.arange(side, device=x.device)[:, None]
        image[..., 2] += torch.arange(side, device=x.device)[None, :]
        guidance = (added or {}).get("guidance")
        return {
            **out,
            "timestep": out["timestep"].to(x.dtype) / 1000,
            "img_ids": image.reshape(side * side, 3),
            "txt_ids": torch.zeros(context.shape[1], 3, device=x.device, dtype=x.dtype),
            "guidance": None if guidance is None else guidance.to(x.device),
        }

    @staticmethod
    def trace_added(module: nn.Module, batch: int, zeros: dict) -> dict | None:
        added = JointDiTKind.trace_added(module, batch, zeros)
        if module.config.guidance_embeds:
            added["guidance"] = torch.ones(batch, **zeros)
        return added


KINDS = {
    "UNet2DConditionModel": UNetKind,
    "PixArtTransformer2DModel": CaptionDiTKind,
    "SanaTransformer2DModel": SanaKind,
    "SD3Transformer2DModel": JointDiTKind,
    "FluxTransformer2DModel": FluxKind,
}


def kind_of(module: nn.Module) -> type[Kind]:
    """The kind of a denoiser module, by its diffusers class (or a subclass of one)."""
    for cls in type(module).__mro__:
        if cls.__name__ in KINDS:
            return KINDS[cls.__name__]
    raise ValueError(
        f"{type(module).__name__} is not a denoiser the hooks know; supported: "
        f"{', '.join(KINDS)}. Pass the pipeline's unet or transformer."
    )
