"""The LocoWorld text-to-image pipeline: pixel-space UNet, tiny CLIP text encoder, our tokenizer."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, SchedulerMixin, UNet2DConditionModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        """Sample images for the prompts; ``output_type`` is ``pil``, ``np`` or ``pt`` in [0, 1]."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = self.unet.device
        cfg = guidance_scale > 1.0
        cond, uncond = self.encode_prompt(prompts, device, 1, cfg)
        context = torch.cat([uncond, cond]) if cfg else cond
        size = self.unet.config.sample_size
        shape = (len(prompts), self.unet.config.in_channels, size, size)
        x = torch.randn(shape, generator=generator, device="cpu").to(device, self.unet.dtype)
        x = x * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = self.scheduler.scale_model_input(torch.cat([x, x]) if cfg else x, t)
            eps = self.unet(inp, t, encoder_hidden_states=context).sample
            if cfg:
                eps_u, eps_c = eps.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = self.scheduler.step(eps, t, x).prev_sample
        images = (x / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return ImagePipelineOutput(images=images)
        images = images.permute(0, 2, 3, 1).float().cpu().numpy()
        if output_type == "pil":
            images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images)
