"""A loaded text-to-image model: a diffusers pipeline plus its family's facts."""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import diffusers
import torch
from torch import Tensor

from loco_lightning.models.families import FAMILIES, Family, get_family
from loco_lightning.models.miniatures import miniature
from loco_lightning.models.tokenizers import ContextTokens
from loco_lightning.models.world import RECORD_NAME

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).parent / "weights"
DEFAULT_WORLD = "world-sd1"
PACKAGED = (
    "world-sd1",
    "world-sd1-planted",
    "world-sd2-planted",
    "world-sdxl-planted",
    "world-if-planted",
    "world-pixart-planted",
    "world-sd3-planted",
    "world-flux-planted",
    "world-vae",
    "world-tokenizer",
    "worldclip",
)


def packaged(source: str) -> str:
    """The folder of a model shipped inside the package (``world-sd1``, ``worldclip``, …);
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
    """What the denoiser takes for a batch of prompts.

    Attributes:
        context: ``encoder_hidden_states`` (B, T, D).
        added: ``added_cond_kwargs`` (SD-XL: ``text_embeds`` (B, P), ``time_ids`` (B, 6); PixArt-α
            1024: ``resolution``, ``aspect_ratio``) or None.
        mask: the text's padding mask (B, T), 1 for tokens, where the denoiser masks (PixArt);
            None elsewhere.
    """

    context: Tensor
    added: dict[str, Tensor] | None
    mask: Tensor | None = None

    def cat(self, other: Conditioning) -> Conditioning:
        """Rows of ``self`` then ``other`` (e.g. unconditional then conditional)."""
        added = mask = None
        if self.added is not None:
            added = {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()}
        if self.mask is not None:
            mask = torch.cat([self.mask, other.mask])
        return Conditioning(torch.cat([self.context, other.context]), added, mask)

    def expand(self, n: int) -> Conditioning:
        """One row repeated ``n`` times (the empty prompt beside a batch)."""
        return self._map(lambda v: v.expand(n, *v.shape[1:]))

    def rows(self, index: Tensor) -> Conditioning:
        """The rows ``index`` picks."""
        return self._map(lambda v: v[index])

    def _map(self, f) -> Conditioning:
        return Conditioning(
            f(self.context),
            None if self.added is None else {k: f(v) for k, v in self.added.items()},
            None if self.mask is None else f(self.mask),
        )


class WeightsNotFoundError(FileNotFoundError):
    """Model weights are neither a local folder, nor cached, nor downloadable."""


@dataclass
class LocoModel:
    """A diffusers pipeline with the facts of its family; the handle every job works with."""

    family: Family
    pipeline: diffusers.DiffusionPipeline
    world: dict | None = None  # a world folder's loco_world.json (+ "folder"); None otherwise
    sampling: dict = field(default_factory=dict)  # a job's choices: steps, guidance, scheduler

    @property
    def steps(self) -> int:
        """Denoising steps: the job's, else the world's own, else the family's."""
        if self.sampling.get("steps") is not None:
            return self.sampling["steps"]
        return self.world["world"]["sampling"]["steps"] if self.world else self.family.steps

    @property
    def guidance(self) -> float:
        """Guidance scale: the job's, else the world's own, else the family's."""
        if self.sampling.get("guidance") is not None:
            return self.sampling["guidance"]
        return self.world["world"]["sampling"]["guidance"] if self.world else self.family.guidance

    @property
    def scorer(self) -> str:
        """The CLIP that scores this model's images: its world's own (``worldclip``), else the
        family's."""
        return (
            self.world["world"].get("scorer", self.family.scorer)
            if self.world
            else self.family.scorer
        )

    @property
    def cfg(self) -> bool:
        """Whether UNet batches are ``[unconditional; conditional]`` halves when sampling."""
        return self.guided()

    def guided(self, guidance: float | None = None) -> bool:
        """Whether sampling at ``guidance`` (the model's own if None) runs an unconditional
        branch: a scale above 1, unless the denoiser takes the scale as an input (FLUX.1-dev)."""
        scale = self.guidance if guidance is None else guidance
        return scale > 1 and not self.family.guidance_embedded

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network text enters: the pipeline's ``unet`` or ``transformer``."""
        return getattr(self.pipeline, self.family.denoiser)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    def component(self, name: str) -> torch.nn.Module:
        """A pipeline component by name (``unet``, ``text_encoder``, …)."""
        return getattr(self.pipeline, name)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Conditioning:
        """Encode prompts exactly as the family's pipeline does (its own ``encode_prompt``).

        Raises:
            ValueError: empty prompt list, a prompt longer than a tokenizer's limit (it would be
                truncated silently otherwise), or one with words the tokenizer reads as unknown.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("Empty prompt list: give at least one prompt to encode.")
        self.check_prompts(prompts)
        return encode_prompts(self.pipeline, self.family, prompts)

    @torch.no_grad()
    def empty(self) -> Conditioning:
        """The empty prompt as the pipeline's classifier-free guidance encodes it (one row): the
        branch guidance subtracts, which edits keep (SANA encodes it without its instruction,
        so it is not ``encode([""])`` there)."""
        return encode_empty(self.pipeline, self.family)

    @property
    def tokens(self) -> ContextTokens:
        """Token ids row by row of an encoded prompt's first tokenizer (all but SD3: the whole
        context): where edits and records find words."""
        pipe, fam = self.pipeline, self.family
        tok = getattr(pipe, fam.context_tokenizer)
        return ContextTokens(tok, context_length(pipe, fam), instruction(pipe, fam))

    @property
    def segments(self) -> tuple[ContextTokens, ...]:
        """Token ids of every tokenizer's rows of an encoded prompt (SD3: CLIP's, then T5's,
        which say the prompt again and must be edited alike; without T5 its zero rows say
        nothing)."""
        first, pipe = self.tokens, self.pipeline
        t5 = getattr(pipe, self.family.context_t5 or "", None)
        if t5 is None:
            return (first,)
        return (first, ContextTokens(t5, t5_length(pipe, self.family), start=first.length))

    def encoder_tokens(self, tokenizer: str = "tokenizer") -> ContextTokens:
        """Token ids position by position of what a text encoder itself reads.

        Raises:
            ValueError: the pipeline puts an instruction before the prompt (SANA), so the
                encoder's positions are not the prompt's; not supported yet.
        """
        if instruction(self.pipeline, self.family):
            raise ValueError(
                f"Family {self.family.name!r} puts an instruction before every prompt, so its text "
                "encoder's token positions are not the prompt's; text-encoder methods (causal "
                "tracing of the text encoder, quickfix) are not supported on it yet. Edit the "
                "denoiser's cross-attention instead (loco edit: LocoEdit, UCE, ...)."
            )
        return ContextTokens.plain(getattr(self.pipeline, tokenizer))

    def check_prompts(self, prompts: list[str]) -> None:
        """Refuse prompts a tokenizer would truncate, or read partly as its unknown token (the
        model would then see another prompt than the one asked for), naming prompt and fix."""
        for name in ("tokenizer", "tokenizer_2"):
            tok = getattr(self.pipeline, name, None)
            if tok is None:
                continue
            unk = tok.unk_token_id
            if unk is not None:  # without the specials, which may share the unknown's id (CLIP)
                for p, ids in zip(prompts, tok(prompts, add_special_tokens=False).input_ids):
                    if unk in ids:
                        words = [
                            w
                            for w in p.split()
                            if unk in tok(w, add_special_tokens=False).input_ids
                        ]
                        raise ValueError(
                            f"Prompt {p!r}: {words or p!r} not in the vocabulary of {name} "
                            f"(it would read as {tok.unk_token!r}); use words this model knows."
                        )
            limit = min(tok.model_max_length, self.family.max_tokens)
            for p, ids in zip(prompts, tok(prompts, truncation=False).input_ids):
                n = len(ids)
                if n > limit:
                    raise ValueError(
                        f"Prompt {p!r} is {n} tokens long but {name} of family "
                        f"{self.family.name!r} takes at most {limit}; it would be truncated. "
                        "Shorten the prompt."
                    )


def encode_prompts(pipe, family: Family, prompts: list[str]) -> Conditioning:
    """The UNet inputs for ``prompts``, made by the pipeline's own ``encode_prompt``.

    Gradients follow the caller's grad mode (world training learns the text encoders through
    this same path, so training and inference cannot encode differently).
    """
    return _ENCODERS[family.encoding](pipe, list(prompts), family)


def context_length(pipe, family: Family) -> int:
    """Rows of an encoded prompt: the family's length, or its context tokenizer's if shorter."""
    tok = getattr(pipe, family.context_tokenizer)
    return min(tok.model_max_length, family.context_length or family.max_tokens)


def _device(pipe, family: Family) -> torch.device:
    return getattr(pipe, family.denoiser).device


def _encode_clip(pipe, prompts: list[str], family: Family) -> Conditioning:
    context, _ = pipe.encode_prompt(prompts, _device(pipe, family), 1, False)
    return Conditioning(context, None)


def _encode_sdxl(pipe, prompts: list[str], family: Family) -> Conditioning:
    context, _, pooled, _ = pipe.encode_prompt(
        prompts,
        device=_device(pipe, family),
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
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
    # IF's encode_prompt is decorated with no_grad: call the function beneath it
    encode_prompt = inspect.unwrap(type(pipe).encode_prompt)
    context, _ = encode_prompt(
        pipe,
        prompts,
        do_classifier_free_guidance=False,
        device=_device(pipe, family),
        clean_caption=False,
    )
    return Conditioning(context, None)


def _encode_t5_masked(pipe, prompts: list[str], family: Family) -> Conditioning:
    encode_prompt = inspect.unwrap(type(pipe).encode_prompt)
    context, mask, _, _ = encode_prompt(
        pipe,
        prompts,
        do_classifier_free_guidance=False,
        device=_device(pipe, family),
        clean_caption=False,
        max_sequence_length=context_length(pipe, family),
    )
    added = None
    if pipe.transformer.use_additional_conditions:  # PixArt-α 1024: the image's size and shape
        side = pipe.transformer.config.sample_size * pipe.vae_scale_factor
        n = len(prompts)
        added = {
            "resolution": context.new_tensor([[side, side]]).repeat(n, 1),
            "aspect_ratio": context.new_tensor([[1.0]]).repeat(n, 1),
        }
    return Conditioning(context, added, mask)


def instruction(pipe, family: Family) -> str:
    """Text the pipeline puts before every prompt by default: SANA's complex human instruction
    (``SanaPipeline.__call__``'s default, joined as its ``encode_prompt`` joins it); "" else."""
    if family.encoding != "gemma":
        return ""
    return "\n".join(_instruction_lines(pipe))


def _instruction_lines(pipe) -> list[str]:
    return inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default


def _encode_gemma(pipe, prompts: list[str], family: Family) -> Conditioning:
    encode_prompt = inspect.unwrap(type(pipe).encode_prompt)
    context, mask, _, _ = encode_prompt(
        pipe,
        prompts,
        do_classifier_free_guidance=False,
        device=_device(pipe, family),
        clean_caption=False,
        max_sequence_length=context_length(pipe, family),
        complex_human_instruction=_instruction_lines(pipe),
    )
    return Conditioning(context, None, mask)


def _empty_gemma(pipe, family: Family) -> Conditioning:
    # SanaPipeline.encode_prompt encodes its negative prompt without the instruction and keeps
    # every position
    context, mask = pipe._get_gemma_prompt_embeds(
        [""],
        device=_device(pipe, family),
        dtype=pipe.text_encoder.dtype,
        clean_caption=False,
        max_sequence_length=context_length(pipe, family),
        complex_human_instruction=False,
    )
    return Conditioning(context, None, mask)


SD3_T5_LENGTH = 256  # StableDiffusion3Pipeline's default max_sequence_length


def t5_length(pipe, family: Family) -> int | None:
    """T5 rows of an encoded prompt where the pipeline pads T5 without a mask (SD3, FLUX): its
    default length, or a shorter T5 tokenizer's own (the worlds'); None for other encodings.

    The padding changes the image, so a plain ``pipe(...)`` call gives the project's images only
    with ``max_sequence_length`` set to this (``sampling.call_options``).
    """
    if family.encoding == "flux":
        return context_length(pipe, family)
    if family.context_t5:
        tok = getattr(pipe, family.context_t5, None)  # SD3 runs without T5: zeros, 256 rows
        return SD3_T5_LENGTH if tok is None else min(tok.model_max_length, SD3_T5_LENGTH)
    return None


def _encode_sd3(pipe, prompts: list[str], family: Family) -> Conditioning:
    context, _, pooled, _ = pipe.encode_prompt(
        prompts,
        None,
        None,
        device=_device(pipe, family),
        do_classifier_free_guidance=False,
        max_sequence_length=t5_length(pipe, family),
    )
    return Conditioning(context, {"pooled_projections": pooled})


def _encode_flux(pipe, prompts: list[str], family: Family) -> Conditioning:
    # T5 pads to FluxPipeline's 512 tokens, or to a shorter tokenizer's own length (FLUX masks
    # no padding, so a plain call must pass max_sequence_length=that to give the same images)
    context, pooled, _ = pipe.encode_prompt(
        prompts,
        None,
        device=_device(pipe, family),
        max_sequence_length=t5_length(pipe, family),
    )
    return Conditioning(context, {"pooled_projections": pooled})


_ENCODERS = {
    "clip": _encode_clip,
    "sdxl": _encode_sdxl,
    "t5": _encode_t5,
    "t5_masked": _encode_t5_masked,
    "gemma": _encode_gemma,
    "sd3": _encode_sd3,
    "flux": _encode_flux,
}
_EMPTY = {"gemma": _empty_gemma}  # where guidance's empty prompt is not encode([""])


def encode_empty(pipe, family: Family) -> Conditioning:
    """The empty prompt of classifier-free guidance, as the pipeline encodes it (one row)."""
    if family.encoding in _EMPTY:
        return _EMPTY[family.encoding](pipe, family)
    return encode_prompts(pipe, family, [""])


AUTO = "auto"


def infer_family(source: str) -> str:
    """The family of a pipeline folder or cached hub id, from its ``model_index.json``.

    The pipeline class names the family; ``StableDiffusionPipeline`` is ``sd2`` when its UNet
    uses linear projections (SD-2's structure) and ``sd1`` otherwise.

    Raises:
        ValueError: no ``model_index.json`` can be read, or its pipeline class is unsupported.
    """
    index = _index_file(source)
    if index is None:
        raise ValueError(
            f"family: auto cannot tell the family of {source!r}: it has no readable "
            "model_index.json (a local diffusers folder, or a hub id in the cache). Set "
            f"model.diffusion.family to one of {', '.join(FAMILIES)}."
        )
    name = json.loads(index.read_text()).get("_class_name")
    matches = [f for f in FAMILIES.values() if f.pipeline == name]
    if not matches:
        supported = sorted({f.pipeline for f in FAMILIES.values()})
        raise ValueError(
            f"{source!r} is a {name} folder; supported pipelines are {', '.join(supported)}. "
            "Other UNets with cross-attention work through loco_lightning.hooks directly."
        )
    if len(matches) == 1:
        return matches[0].name
    unet = index.parent / "unet" / "config.json"
    linear = unet.exists() and json.loads(unet.read_text()).get("use_linear_projection", False)
    return "sd2" if linear else "sd1"


def _index_file(source: str) -> Path | None:
    local = Path(source).expanduser()
    if local.is_dir():
        return local / "model_index.json" if (local / "model_index.json").exists() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, "model_index.json", local_files_only=True))
    except Exception:  # not a hub id, or not cached: the caller says what to do
        return None


def check_family(family: str, source: str) -> None:
    """Refuse an explicit family that contradicts a folder's ``model_index.json``."""
    index = _index_file(source)
    if index is None:
        return
    found = infer_family(source)
    if found != family:  # sd1 and sd2 share a pipeline class but not their defaults or scorer
        raise ValueError(
            f"model.diffusion.family={family!r} but {source} holds a "
            f"{get_family(found).pipeline} of family {found!r}; set family: {found} or auto."
        )


def load_model(
    family: str = AUTO,
    source: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    channels_last: bool = True,
) -> LocoModel:
    """Load a pipeline from a hub id, a local diffusers folder, or build a family's miniature.

    Args:
        family: registry name (``sd1``, ``sd2``, ``sdxl``, ``if``) or ``auto``: read from the
            source's ``model_index.json``.
        source: hub id, local folder, packaged world name (``world-sd1``, ``world-sd1-planted``,
            …), or ``miniature`` (random-weight test model of ``family``); ``None`` uses the
            family's default (with ``auto``: the packaged ``world-sd1``).
        dtype: torch dtype name of the weights.
        device: where the pipeline runs.
        channels_last: store the UNet's convolutions channels-last (several times faster on CPU).

    Raises:
        WeightsNotFoundError: the weights cannot be found locally and cannot be downloaded.
        ValueError: ``auto`` cannot tell the family, or an explicit one contradicts the folder.
    """
    if source is None:
        source = DEFAULT_WORLD if family == AUTO else get_family(family).default_source
    source = packaged(source)
    if source == "miniature" and family == AUTO:
        raise ValueError(f"source: miniature needs an explicit family ({', '.join(FAMILIES)}).")
    if family == AUTO:
        family = infer_family(source)
    elif source != "miniature":
        check_family(family, source)
    fam = get_family(family)
    torch_dtype = getattr(torch, dtype)
    if source == "miniature":
        pipe = miniature(fam)
    else:
        pipe = _from_pretrained(getattr(diffusers, fam.pipeline), fam, source, torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    check_tokenizers(pipe, source)
    if getattr(pipe, fam.denoiser).dtype != torch_dtype:
        pipe = pipe.to(dtype=torch_dtype)
    pipe = pipe.to(device)
    if channels_last:
        getattr(pipe, fam.denoiser).to(memory_format=torch.channels_last)
    return LocoModel(fam, pipe, world_record(source))


MAX_USABLE_LENGTH = 100_000  # transformers' "no limit" is 1e30; a pipeline pads to this length


def check_tokenizers(pipe, source: str) -> None:
    """Refuse a tokenizer without a usable ``model_max_length``: pipelines pad every prompt to it.

    (A tokenizer saved without one reports 1e30, and SD's ``encode_prompt`` then fails with an
    ``OverflowError`` far from the cause.)
    """
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None and not 0 < tok.model_max_length <= MAX_USABLE_LENGTH:
            raise ValueError(
                f"{name} of {source} has no usable model_max_length ({tok.model_max_length}); "
                f'set "model_max_length" in {name}/tokenizer_config.json to the text encoder\'s '
                "length (77 for CLIP and for DeepFloyd's T5)."
            )


def world_record(source: str) -> dict | None:
    """A world folder's ``loco_world.json`` (with ``folder`` added), None for other models."""
    record = Path(source).expanduser() / RECORD_NAME
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    return {**data, "folder": str(record.parent)} if "world" in data else None


def _from_pretrained(cls, fam: Family, source: str, dtype: torch.dtype):
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "model_index.json").exists():
            raise WeightsNotFoundError(
                f"{local} exists but is not a diffusers pipeline folder (no model_index.json). "
                "Point model.diffusion.source at the folder that holds model_index.json."
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
            "model.diffusion.source to a local diffusers folder (the one holding model_index.json)."
        ) from None
