"""Generate sweep items: one UNet batch, each item with its own window given its target prompt."""

from __future__ import annotations

from torch import Tensor

from loco_lightning.hooks import PromptSwap, intervene
from loco_lightning.localization.data import SweepItem
from loco_lightning.models import LocoModel
from loco_lightning.models.sampling import denoise


def generate_items(
    model: LocoModel,
    items: list[SweepItem],
    *,
    cache_kv: bool,
    pooled: bool,
    steps: int | None = None,
    guidance: float | None = None,
    scheduler=None,
    stop: int | None = None,
) -> Tensor:
    """(B, 3, H, W) images in [0, 1]; item b's window sites read its target prompt.

    Only the conditional half of the guidance batch is intervened. ``steps``, ``guidance``,
    ``scheduler`` and ``stop`` are passed to ``denoise`` (``Diffusion.sampler`` gives the first
    three).
    """
    cond = model.encode([it.pair.original for it in items])
    specs = [
        PromptSwap(it.window, it.pair.target, samples=(b,), pooled=pooled)
        for b, it in enumerate(items)
        if it.window
    ]
    guidance = model.guidance if guidance is None else guidance
    with intervene(
        model.denoiser, specs, encode=model.encode, cfg=model.guided(guidance), cache_kv=cache_kv
    ):
        return denoise(
            model,
            cond,
            [it.noise_seed for it in items],
            steps=steps,
            guidance=guidance,
            scheduler=scheduler,
            stop=stop,
        )
