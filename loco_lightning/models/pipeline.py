"""A loaded text-to-image model: a diffusers pipeline plus its family's facts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import diffusers
import torch
from torch import Tensor

from loco_lightning.models.families import Family, get_family
from loco_lightning.models.miniatures import miniature
from loco_lightning.models.world import LocoWorldPipeline

log = logging.getLogger(__name__)

PIPELINES = {"LocoWorldPipeline": LocoWorldPipeline}
WEIGHTS = Path(__file__).parent / "weights"
PACKAGED = ("world-natural", "world-planted", "world-bidirectional", "worldclip")


def packaged(source: str) -> str:
    """The folder of a model shipped inside the package (``world-natural``, ``worldclip``, …);
    any other source is returned unchanged."""
    if source not in PACKAGED:
        return source
    folder = WEIGHTS / source
    if not folder.exists():
        raise WeightsNotFoundError(
            f"The packaged model {source!r} is missing from {WEIGHTS}; reinstall loco-lightning, "
            "or train it with `loco world fit` (see configs/world/)."
        )
    return str(folder)


class Conditioning(NamedTuple):
    """What the UNet takes for a batch of prompts.

    Attributes:
        context: ``encoder_hidden_states`` (B, T, D).
        added: ``added_cond_kwargs`` (SD-XL: ``text_embeds`` (B, P), ``time_ids`` (B, 6)) or None.
    """

    context: Tensor
    added: dict[str, Tensor] | None

    def cat(self, other: Conditioning) -> Conditioning:
        """Rows of ``self`` then ``other`` (e.g. unconditional then conditional)."""
        added = None
        if self.added is not None:
            added = {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()}
        return Conditioning(torch.cat([self.context, other.context]), added)


class WeightsNotFoundError(RuntimeError):
    """Model weights are neither a local folder, nor cached, nor downloadable."""


@dataclass
class LocoModel:
    """A diffusers pipeline with the facts of its family; the handle every job works with."""

    family: Family
    pipeline: diffusers.DiffusionPipeline

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipeline.unet

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def component(self, name: str) -> torch.nn.Module:
        """A pipeline component by name (``unet``, ``text_encoder``, …)."""
        return getattr(self.pipeline, name)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Conditioning:
        """Encode prompts exactly as the family's pipeline does (its own ``encode_prompt``).

        Raises:
            ValueError: empty prompt list, or a prompt longer than a tokenizer's limit (it would be
                truncated silently otherwise).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("Empty prompt list: give at least one prompt to encode.")
        self.check_lengths(prompts)
        return _ENCODERS[self.family.encoding](self.pipeline, prompts, self.family)

    def check_lengths(self, prompts: list[str]) -> None:
        """Refuse prompts a tokenizer would truncate, naming the prompt and the limit."""
        for name in ("tokenizer", "tokenizer_2"):
            tok = getattr(self.pipeline, name, None)
            if tok is None:
                continue
            limit = tok.model_max_length
            for p, ids in zip(prompts, tok(prompts, truncation=False).input_ids):
                n = len(ids)
                if n > limit:
                    raise ValueError(
                        f"Prompt {p!r} is {n} tokens long but {name} of family "
                        f"{self.family.name!r} takes at most {limit}; it would be truncated. "
                        "Shorten the prompt."
                    )


def _encode_clip(pipe, prompts: list[str], family: Family) -> Conditioning:
    context, _ = pipe.encode_prompt(prompts, pipe.unet.device, 1, False)
    return Conditioning(context, None)


def _encode_sdxl(pipe, prompts: list[str], family: Family) -> Conditioning:
    context, _, pooled, _ = pipe.encode_prompt(
        prompts, device=pipe.unet.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    size = (pipe.default_sample_size * pipe.vae_scale_factor,) * 2
    time_ids = pipe._get_add_time_ids(
        size,
        (0, 0),
        size,
        dtype=context.dtype,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    ).to(context.device)
    return Conditioning(
        context, {"text_embeds": pooled, "time_ids": time_ids.repeat(len(prompts), 1)}
    )


def _encode_t5(pipe, prompts: list[str], family: Family) -> Conditioning:
    context, _ = pipe.encode_prompt(
        prompts, do_classifier_free_guidance=False, device=pipe.unet.device, clean_caption=False
    )
    return Conditioning(context, None)


_ENCODERS = {"clip": _encode_clip, "sdxl": _encode_sdxl, "t5": _encode_t5}


def load_model(
    family: str,
    source: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    channels_last: bool = True,
) -> LocoModel:
    """Load a family's pipeline from a hub id, a local diffusers folder, or build its miniature.

    Args:
        family: registry name (``sd1``, ``sd2``, ``sdxl``, ``if``, ``world``).
        source: hub id, local folder, packaged name (``world-natural``, ``world-planted``,
            ``world-bidirectional``), or ``miniature`` (random-weight test model); ``None`` uses
            the family's default.
        dtype: torch dtype name of the weights.
        device: where the pipeline runs.
        channels_last: store the UNet's convolutions channels-last (several times faster on CPU).

    Raises:
        WeightsNotFoundError: the weights cannot be found locally and cannot be downloaded.
    """
    fam = get_family(family)
    source = packaged(source or fam.default_source)
    torch_dtype = getattr(torch, dtype)
    if source == "miniature":
        pipe = miniature(fam)
    else:
        cls = PIPELINES.get(fam.pipeline) or getattr(diffusers, fam.pipeline)
        pipe = _from_pretrained(cls, fam, source, torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    if pipe.unet.dtype != torch_dtype:
        pipe = pipe.to(dtype=torch_dtype)
    pipe = pipe.to(device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    return LocoModel(fam, pipe)


def _from_pretrained(cls, fam: Family, source: str, dtype: torch.dtype):
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "model_index.json").exists():
            raise WeightsNotFoundError(
                f"{local} exists but is not a diffusers pipeline folder (no model_index.json). "
                "Point model.source at the folder that holds model_index.json."
            )
        return cls.from_pretrained(local, torch_dtype=dtype)
    kwargs = {"torch_dtype": dtype}
    if fam.encoding == "t5":  # IF ships fp16 variants only for some files
        kwargs["variant"] = None
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except Exception:  # not cached: try the hub once
        log.info("%s is not in the local cache; trying the hub", source)
    try:
        return cls.from_pretrained(source, **kwargs)
    except Exception as err:
        raise WeightsNotFoundError(
            f"Cannot load {fam.name!r} weights from {source!r}: it is not a local folder, not in "
            f"the Hugging Face cache, and could not be downloaded ({type(err).__name__}). Either "
            f"download it once where there is network (`hf download {source}`) or set "
            "model.source to a local diffusers folder (the one holding model_index.json)."
        ) from None
