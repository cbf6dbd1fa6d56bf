"""Test helpers shared across the suite (miniatures are built once per session)."""

from __future__ import annotations

import functools

import torch

from loco_lightning.models import LocoModel, load_model


@functools.cache
def mini_model(family: str) -> LocoModel:
    return load_model(family, "miniature")


def unet_inputs(model: LocoModel, prompts: list[str], seeds=None, t: int = 500) -> dict:
    """A UNet call's kwargs for these prompts; row i's noise comes from ``seeds[i]`` alone."""
    cond = model.encode(prompts)
    cfg = model.unet.config
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    seeds = range(len(prompts)) if seeds is None else seeds
    x = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    return {
        "sample": x,
        "timestep": torch.tensor(t),
        "encoder_hidden_states": cond.context,
        "added_cond_kwargs": cond.added,
    }
