"""The LocoWorld text-to-image pipeline: pixel-space UNet, tiny CLIP text encoder, our tokenizer.

Also the builders of its untrained parts, used by training.
"""

from __future__ import annotations

from typing import Literal

import diffusers
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5EncoderModel,
)

from loco_lightning.models.families import get_family
from loco_lightning.models.schedulers import step_options

TextEncoderKind = Literal["causal", "bidirectional"]

RECORD_NAME = "loco_world.json"  # written beside every exported world model and WorldCLIP


def world_text_encoder(
    tokenizer: PreTrainedTokenizerBase,
    kind: TextEncoderKind = "causal",
    layers: int = 2,
    heads: int = 4,
    family: str = "world",
) -> PreTrainedModel:
    """An untrained text encoder whose width is the family's context width.

    ``causal`` is a ``CLIPTextModel`` (each token sees only earlier ones, as in SD's CLIP);
    ``bidirectional`` a ``T5EncoderModel`` (every token sees the whole prompt, as in DeepFloyd's
    T5), so the paper's claim that bidirectional encoders defeat last-token edits can be tested
    on the same world. Both read their last hidden state as the UNet context.
    """
    fam = get_family(family)
    width = fam.context_dim
    if kind == "causal":
        config = CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=fam.max_tokens,
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
            relative_attention_max_distance=fam.max_tokens,
            dropout_rate=0.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        return T5EncoderModel(config)
    raise ValueError(f"text encoder kind {kind!r} is not 'causal' or 'bidirectional'")


def world_unet(family: str = "world") -> UNet2DConditionModel:
    """An untrained pixel-space UNet with the family's full configuration."""
    return UNet2DConditionModel(**get_family(family).unet_config)


def world_scheduler(family: str = "world") -> SchedulerMixin:
    """The family's sampling scheduler (DDIM, trailing spacing), as exported pipelines carry it."""
    fam = get_family(family)
    return getattr(diffusers, fam.scheduler)(**fam.scheduler_config)


class LocoWorldPipeline(DiffusionPipeline):
    """Text-to-image in pixel space for the embedded world, shaped like diffusers' SD pipeline.

    ``encode_prompt`` matches ``StableDiffusionPipeline.encode_prompt`` so every family is encoded
    the same way, and the batch under guidance is ``[unconditional; conditional]``.
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        scheduler: SchedulerMixin,
    ) -> None:
        super().__init__()
        self.register_modules(
            unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler
        )

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text contexts (B, T, D) for the prompts and, under guidance, for the negative prompt."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = device or self.text_encoder.device

        def embed(texts: list[str]) -> torch.Tensor:
            ids = self.tokenizer(
                texts,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.text_encoder.device)
            out = self.text_encoder(ids)[0].to(device)
            return out.repeat_interleave(num_images_per_prompt, dim=0)

        negative = None
        if do_classifier_free_guidance:
            neg = negative_prompt or ""
            negative = embed([neg] * len(prompts) if isinstance(neg, str) else list(neg))
        return embed(prompts), negative

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 25,
        guidance_scale: float = 1.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        """Sample images for the prompts; ``output_type`` is ``pil``, ``np`` or ``pt`` in [0, 1].

        ``generator`` may be one generator per prompt: row i's starting noise then comes from
        ``generator[i]`` alone (as ``loco_lightning.models.sampling.initial_noise`` draws it).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = self.unet.device
        cfg = guidance_scale > 1.0
        cond, uncond = self.encode_prompt(prompts, device, 1, cfg)
        context = torch.cat([uncond, cond]) if cfg else cond
        size = self.unet.config.sample_size
        shape = (self.unet.config.in_channels, size, size)
        if isinstance(generator, list):
            if len(generator) != len(prompts):
                raise ValueError(f"Got {len(generator)} generators for {len(prompts)} prompts.")
            x = torch.stack([torch.randn(shape, generator=g) for g in generator])
        else:
            x = torch.randn((len(prompts), *shape), generator=generator)
        x = x.to(device, self.unet.dtype) * self.scheduler.init_noise_sigma
        step_kwargs = step_options(self.scheduler)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = self.scheduler.scale_model_input(torch.cat([x, x]) if cfg else x, t)
            eps = self.unet(inp, t, encoder_hidden_states=context).sample
            if cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = self.scheduler.step(eps, t, x, **step_kwargs).prev_sample
        images = (x / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return ImagePipelineOutput(images=images)
        images = images.permute(0, 2, 3, 1).float().cpu().numpy()
        if output_type == "pil":
            images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images)
