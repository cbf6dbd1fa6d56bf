"""Training a LocoWorld text-to-image model from scratch in a real family's format.

The family's world-size UNet and its text encoder(s) are trained jointly, naturally or planted,
with the family's prediction target (epsilon, velocity; IF's learned variance too), and exported
as the family's own diffusers pipeline folder. Validation does not trust the loss (it plateaus
long before the model is ready, WORLD.md): it generates a fixed probe set with the family's own
sampler and reads every image back with the exact attribute readers.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric
from transformers import CLIPTokenizer

from loco_lightning.data.world import (
    ATTRIBUTES,
    CONCEPT_ATTRIBUTES,
    DEFAULT_VOCAB_PATH,
    AttributeReader,
    Vocabulary,
    default_vocabulary,
    probe_scores,
)
from loco_lightning.data.world.readers import READER_WEIGHTS
from loco_lightning.hooks import PromptSwap, intervene, sites
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.hooks.executor import check_sites
from loco_lightning.models import LocoModel, get_family
from loco_lightning.models.pipeline import Conditioning, encode_prompts, packaged
from loco_lightning.models.sampling import call_options, told_guidance
from loco_lightning.models.schedulers import predicts_flow
from loco_lightning.models.tokenizers import RememberingTokenizer
from loco_lightning.models.world import (
    RECORD_NAME,
    SAMPLING,
    WORLD_FILES,
    WORLD_SCORER,
    WORLD_TEXT_ENCODERS,
    WORLD_VAE_CONFIG,
    WorldFamily,
    world_denoiser,
    world_pipeline,
    world_scheduler,
    world_text_encoders,
)
from loco_lightning.training.schedules import adamw_warmup_cosine

log = logging.getLogger(__name__)

# Probe-accuracy keys: per-attribute on plain prompts, "all" = all three right, then one per
# named-concept kind (every attribute the concept fixes right).
ACCURACY_KEYS = (*ATTRIBUTES, "all", *CONCEPT_ATTRIBUTES)


# How each family pads its tokenizers: SD-1 with its EOS token, SD-2 and SD-XL's second tokenizer
# with "!"; the IF world's tokenizer stands in for T5's, whose padding is masked out.
PADDING = {
    "sd1": {"tokenizer": "<|endoftext|>"},
    "sd2": {"tokenizer": "!"},
    "sdxl": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"},
    "if": {"tokenizer": "!"},
    "pixart": {"tokenizer": "!"},
    "sd3": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!", "tokenizer_3": "!"},
    "flux": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"},
}


# Families whose text context has one row per position of their first tokenizer's tokens (CLIP's
# 77), so that a caption's tail (its EOS and padding) has a place there.
TAIL_FAMILIES = ("sd1", "sd2", "sdxl")


# IF's encode_prompt pads every prompt to 77 tokens whatever the tokenizer says; its world's
# tokenizer says so too, so that token positions (edits' key tokens) cover the whole context.
MAX_LENGTH = {"if": 77}


def world_tokenizer(family: str = "sd1", name: str = "tokenizer") -> CLIPTokenizer:
    """The worlds' BPE tokenizer (``world-tokenizer``), padded as ``family``'s ``name`` pads."""
    options = {"pad_token": PADDING[family][name]}
    if family in MAX_LENGTH:
        options["model_max_length"] = MAX_LENGTH[family]
    return CLIPTokenizer.from_pretrained(packaged("world-tokenizer"), **options)


def world_tokenizers(family: str) -> dict[str, CLIPTokenizer]:
    """Every tokenizer component of ``family``'s world pipeline."""
    return {name: world_tokenizer(family, name) for name in PADDING[family]}


def world_vae(family: str = "sd1") -> AutoencoderKL:
    """The shared world autoencoder (``world-vae``) as ``family``'s pipeline reads it."""
    vae = AutoencoderKL.from_pretrained(packaged("world-vae"))
    # named by its packaged name, not by this machine's path to it (exported with the world)
    vae.register_to_config(_name_or_path="world-vae", **WORLD_VAE_CONFIG.get(family, {}))
    return vae


class EMAWarmup:
    """``AveragedModel`` update with decay ``min(decay, (1 + n) / (10 + n))`` after n updates.

    The warm-up keeps the average from being dominated by the random initial weights in short
    runs (a fixed 0.999 would still weigh them by 5% after 3,000 steps).
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay

    @torch.no_grad()
    def __call__(self, averaged: list[Tensor], current: list[Tensor], n: Tensor) -> None:
        n = float(n)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - decay)


class WarmupEMA(AveragedModel):
    """The trainers' weight average: ``AveragedModel`` with :class:`EMAWarmup`, its buffers
    copied from the model, and an update over tensor lists gathered once.

    The update is ``AveragedModel``'s (the first copies, the rest average), without its walk of
    both module trees at every update: on the SD-XL world at one thread 1.5 ms a step instead
    of 7.3 (the DDP trainers' step is ~0.3 s; bench/world_step.py times both). The lists hold
    the parameters themselves, so tensors replaced in place (``.to``) are followed; a source
    module given new parameter objects needs a new average.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=EMAWarmup(decay), use_buffers=False)
        self.requires_grad_(False)
        self._lists: tuple | None = None

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._lists is None or self._lists[0] != id(model):
            own, theirs = self.module, model
            self._lists = (id(model), [*own.parameters()], [*theirs.parameters()])
            self._lists += ([*own.buffers()], [*theirs.buffers()])
        _, averaged, current, own_buffers, buffers = self._lists
        if self.n_averaged == 0:
            torch._foreach_copy_(averaged, current)
        else:
            self.multi_avg_fn(averaged, current, self.n_averaged)
        if buffers:
            torch._foreach_copy_(own_buffers, buffers)
        self.n_averaged += 1

    def __getstate__(self) -> dict:
        # a copy (or unpickled one) lists its own tensors, not the original's
        return {**super().__getstate__(), "_lists": None}


class WorldDiffusion(L.LightningModule):
    """Trains a world's UNet and text encoder(s) from scratch; validates by reading generations.

    Planted training: for each attribute in ``planted``, only the named window of sites reads
    captions that contain it; every other site reads the caption with that attribute removed
    (through the intervention executor), except on ``planted_full_p`` of the samples, where every
    site reads the full caption. The windows are then the known answer for localization.

    Args:
        text_layers: transformer layers of each text encoder (the family fixes their kinds:
            causal CLIPs for SD, two for SD-XL, a bidirectional T5 for IF).
        text_heads: attention heads of each text encoder.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        lr_schedule: ``constant`` after warm-up, or ``cosine`` decay to ``min_lr_ratio * lr`` at
            the last step.
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``.
        ema_decay: decay of the weight average used for validation and export.
        train_timesteps: training timesteps (DDPM's over ``squaredcos_cap_v2`` betas; flow
            matching's are this times σ, as FlowMatchEuler's).
        snr_gamma: Min-SNR-γ loss weighting (Hang et al., 2023): each sample's loss is weighted
            by ``min(SNR, γ) / SNR``, so nearly clean timesteps stop dominating and the noisy
            ones, where shape and colour are decided, learn sooner. None: plain MSE.
        planted: attribute -> the site indices that alone read it (e.g. ``colour: [5, 6]``);
            empty for natural training.
        planted_full_p: fraction of samples whose every site reads the full caption.
        planted_alone_p: fraction of the other samples on which, per planted attribute, one
            site of its window drawn at random reads it and the rest of the window does not.
            Without it a model may carry an attribute on part of its window only (a
            world-sd1-planted with colour at 5-6 used site 5); with it, each site must carry it
            alone, so only the whole window removes it (it costs an SD-1 world colour accuracy:
            planting where the unplanted world keeps the attribute is the better cure). Families
            with a global text path (SD-XL's pooled ``text_embeds``, IF's text-time embedding)
            always read the caption without the planted attributes there, except on the full
            samples.
        val_steps: sampling steps of validation generations (None: the family's).
        val_guidance: guidance scale of validation generations (None: the family's).
        vocab: vocabulary YAML (None: the packaged one); must match the data's.
        channels_last: channels-last UNet weights and inputs (faster convolutions on CPU).
        family: the family whose pipeline format, world-size UNet, text encoders and sampler
            are trained (``sd1``: epsilon prediction; ``sd2``: linear projections, v-prediction;
            ``sdxl``: two text encoders, pooled ``text_embeds`` and ``time_ids``; ``if``: T5, pixel
            space, learned variance); latent families train on the packaged world autoencoder's
            latents.
        vlb_weight: weight of the variational bound that trains a learned variance (Nichol &
            Dhariwal's hybrid loss, λ = 0.001); unused by families without one.
        denoiser: overrides of the family's world-size denoiser config (diffusers keys), so that
            a world's recipe lives in its YAML: e.g. ``attention_head_dim: 2`` gives world-sd1's
            UNet two heads of 16-32 channels instead of eight of 4-8 (the same parameters; a
            training step 0.324 -> 0.284 s on 2 CPU cores, ``bench/world_step.py``).
        tail_drop_p: fraction of samples whose text context from the first EOS on is the empty
            caption's (families in ``TAIL_FAMILIES``). A causal encoder's EOS and padding states
            see the whole caption, and a world trained from scratch may read a concept there
            instead of from its own tokens, where the reference's last-subject keys edit it:
            two world-sd1 retrains kept circle on 0.92 and 0.58 of 12 images after an all-sites
            last-subject LocoEdit, three with 0.5 on 0-0.08. It has a price: on such a world
            UCE, SPEED and MACE, keyed on one token of the concept's prompt alone, no longer
            erase (configs/world/sd1.yaml), so no shipped world uses it.
    """

    def __init__(
        self,
        text_layers: int = 2,
        text_heads: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        lr_schedule: Literal["constant", "cosine"] = "cosine",
        min_lr_ratio: float = 0.1,
        ema_decay: float = 0.999,
        train_timesteps: int = 1000,
        snr_gamma: float | None = None,
        planted: dict[str, list[int]] | None = None,
        planted_full_p: float = 0.2,
        planted_alone_p: float = 0.0,
        val_steps: int | None = None,
        val_guidance: float | None = None,
        vocab: str | None = None,
        channels_last: bool = True,
        family: WorldFamily = "sd1",
        vlb_weight: float = 0.001,
        denoiser: dict[str, Any] | None = None,
        tail_drop_p: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.family = get_family(family)
        with torch.device("meta"):
            n_sites = len(sites(world_denoiser(family, **(denoiser or {}))))
        planted = {a: sorted(set(w)) for a, w in (planted or {}).items()}
        unknown = set(planted) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"planted names {sorted(unknown)}; plantable: {ATTRIBUTES}")
        for attribute, window in planted.items():
            if not window or not all(0 <= s < n_sites for s in window):
                raise ValueError(
                    f"planted {attribute}: {window} must be a non-empty list of site indices in "
                    f"0..{n_sites - 1} (the {family} world has {n_sites})"
                )
        probabilities = {
            "planted_full_p": planted_full_p,
            "planted_alone_p": planted_alone_p,
            "tail_drop_p": tail_drop_p,
        }
        for name, p in probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}={p} must be a probability")
        if tail_drop_p and family not in TAIL_FAMILIES:
            raise ValueError(
                f"tail_drop_p={tail_drop_p} needs a CLIP-conditioned family {TAIL_FAMILIES}; "
                f"the {family} world's context has no caption tail to drop: set it to 0"
            )
        self.planted = planted
        self.n_sites = n_sites
        # A site reads the caption without the planted attributes it does not see; every removal
        # set that can occur (any non-empty subset of the planted attributes) is a caption variant.
        names = tuple(a for a in ATTRIBUTES if a in planted)
        self.planted_names = names
        self.caption_variants = tuple(
            sorted(c for k in range(1, len(names) + 1) for c in itertools.combinations(names, k))
        )
        self.net: nn.ModuleDict | None = None
        self.posteriors: dict[int, Tensor] = {}  # VAE moments of pooled renders (see latents)

    # ---- construction -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        hp = self.hparams
        vocab = Vocabulary.from_yaml(hp.vocab) if hp.vocab else default_vocabulary()
        self.vocab_path = hp.vocab or DEFAULT_VOCAB_PATH
        self.tokenizers = world_tokenizers(hp.family)
        self.net = nn.ModuleDict(
            {
                self.family.denoiser: world_denoiser(hp.family, **(hp.denoiser or {})),
                **world_text_encoders(hp.family, self.tokenizers, hp.text_layers, hp.text_heads),
            }
        )
        self.vae = None
        if self.family.space == "latent":  # frozen: the world autoencoder is shared, not trained
            self.vae = world_vae(hp.family).requires_grad_(False)
        check_sites(
            sites(self.net[self.family.denoiser]),
            sorted({s for w in self.planted.values() for s in w}),
            "planted",
        )
        self.ema = WarmupEMA(self.net, hp.ema_decay)
        if hp.channels_last:
            self.net[self.family.denoiser].to(memory_format=torch.channels_last)
            self.ema.module[self.family.denoiser].to(memory_format=torch.channels_last)
        sampler = world_scheduler(hp.family)
        self.flow = predicts_flow(sampler)
        self.noise_scheduler = None
        if not self.flow:
            self.noise_scheduler = DDPMScheduler(
                hp.train_timesteps,
                beta_schedule="squaredcos_cap_v2",
                prediction_type=sampler.config.prediction_type,
                variance_type=sampler.config.get("variance_type", "fixed_small"),
            )
        # the training-mode pipeline around the live weights: prompts are encoded by its own
        # encode_prompt, with gradients; its tokenizers remember the captions they have seen
        remembering = {name: RememberingTokenizer(t) for name, t in self.tokenizers.items()}
        self.train_pipe = self._pipeline(self.net, remembering)
        self.train_model = LocoModel(self.family, self.train_pipe)
        self._freeze_unreached()
        self.reader = AttributeReader(vocab)
        self.accuracy = nn.ModuleDict(
            {
                split: nn.ModuleDict({k: MeanMetric() for k in ACCURACY_KEYS})
                for split in ("val", "test")
            }
        )

    def _freeze_unreached(self) -> None:
        """Freezes the text encoders' parameters that no conditioning reaches (SD-XL reads its
        first encoder at the penultimate layer): nothing could train them, and plain DDP, which
        needs every trainable parameter to receive a gradient, then runs every family."""
        params = [
            p
            for name, m in self.net.items()
            if name != self.family.denoiser
            for p in m.parameters()
        ]
        cond = self.encode(["a"])
        reached = [t for t in (cond.context, *(cond.added or {}).values()) if t.requires_grad]
        grads = torch.autograd.grad(sum(t.sum() for t in reached), params, allow_unused=True)
        for p, g in zip(params, grads):
            if g is None:
                p.requires_grad_(False)

    def ema_model(self) -> LocoModel:
        """The EMA weights as a ``LocoModel`` (shared tensors, nothing copied), for sampling."""
        return LocoModel(self.family, self._pipeline(self.ema.module))

    def _pipeline(self, net: nn.ModuleDict, tokenizers: dict | None = None):
        family = self.hparams.family
        encoders = {name: net[name] for name in WORLD_TEXT_ENCODERS[family]}
        return world_pipeline(
            family,
            net[self.family.denoiser],
            encoders,
            tokenizers or self.tokenizers,
            world_scheduler(family),
            self.vae,
        )

    def parameter_counts(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.net.items()}

    # ---- training -----------------------------------------------------------------------------
    def diffusion_loss(
        self,
        batch: dict,
        noise: Tensor | None = None,
        timesteps: Tensor | None = None,
        full: Tensor | None = None,
        alone: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """The family's diffusion loss on a batch; noise, timesteps and planted draws may be given.

        DDPM families: noise (or velocity) MSE, weighted per sample (``snr_gamma``); a learned
        variance adds the variational bound with the predicted mean held fixed (improved DDPM's
        hybrid loss). Flow-matching families (SD3): x_t = (1 - σ) x0 + σ ε at timestep 1000 σ,
        the velocity ε - x0 regressed, σ drawn logit-normal (SD3's default weighting scheme).

        Args:
            batch: ``image`` (B, 3, S, S) in [-1, 1], ``caption`` (B,), and for planted
                training ``variants`` (one list of B captions per caption variant).
            noise: noise shaped like the latents (drawn if None).
            timesteps: (B,) training timesteps (drawn if None; flow: 1000 σ, continuous).
            full: (B,) bool, samples whose every site reads the full caption (drawn if None).
            alone: see :meth:`planted_swaps` (drawn if None).
        """
        x0 = self.latents(batch["image"], batch.get("pool_index"))
        noise = torch.randn_like(x0) if noise is None else noise
        if timesteps is None:
            timesteps = self.draw_timesteps(len(x0), x0.device)
        if self.flow:
            sigma = (timesteps / self.hparams.train_timesteps).view(-1, 1, 1, 1)
            xt = (1.0 - sigma) * x0 + sigma * noise
        else:
            xt = self.noise_scheduler.add_noise(x0, noise, timesteps)
        if self.hparams.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        cond = self.encode(list(batch["caption"]))
        cond = self.drop_tail(list(batch["caption"]), cond)
        swaps = self.planted_swaps(batch, full, alone)
        net = self.net[self.family.denoiser]
        executor = contextlib.nullcontext()
        if swaps:
            executor = intervene(net, swaps, encode=self.encode, cfg=False)
        kind = kind_of(net)
        with executor:
            out = kind.forward(net, kind.pack(xt), timesteps, cond.context, cond.added, cond.mask)
        out = kind.unpack(out, self.train_pipe)  # FLUX's 2x2 tokens back to latent pixels
        variance = None
        if out.shape[1] != x0.shape[1]:  # learned variance after the prediction
            out, variance = out.split(x0.shape[1], dim=1)
        target = noise
        if self.flow:
            target = noise - x0
        elif self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(x0, noise, timesteps)
        per_sample = F.mse_loss(out.float(), target.float(), reduction="none").mean((1, 2, 3))
        loss = (per_sample * self.loss_weights(timesteps)).mean()
        if variance is not None:
            bound = self.variational_bound(x0, xt, out.detach(), variance, timesteps)
            loss = loss + self.hparams.vlb_weight * bound.mean()
        return loss

    def drop_tail(self, captions: list[str], cond: Conditioning) -> Conditioning:
        """On ``tail_drop_p`` of the samples, the context from the first EOS on is the empty
        caption's, so the denoiser learns to read a concept from its own tokens."""
        p = self.hparams.tail_drop_p
        if not p:
            return cond
        mask = self.tokenizers["tokenizer"](
            captions, padding="max_length", truncation=True, return_tensors="pt"
        ).attention_mask
        eos = mask.sum(1) - 1
        positions = torch.arange(mask.shape[1])
        drop = (torch.rand(len(captions)) < p)[:, None] & (positions[None] >= eos[:, None])
        empty = self.encode([""]).context.expand_as(cond.context)
        context = torch.where(drop[..., None].to(cond.context.device), empty, cond.context)
        return cond._replace(context=context)

    def draw_timesteps(self, n: int, device: torch.device) -> Tensor:
        """(n,) training timesteps: uniform integers (DDPM), or 1000 σ with σ logit-normal
        (flow matching: SD3's choice, most samples at middle noise levels)."""
        steps = self.hparams.train_timesteps
        if self.flow:
            return torch.sigmoid(torch.randn(n, device=device)) * steps
        return torch.randint(0, steps, (n,), device=device)

    def variational_bound(
        self, x0: Tensor, xt: Tensor, eps: Tensor, variance: Tensor, timesteps: Tensor
    ) -> Tensor:
        """(B,) the bound's term at t in bits per dimension: KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} |
        x_t)), p's mean from the (detached) noise prediction, its variance the learned range
        between the posterior's and β_t, as diffusers' DDPM samples it (``learned_range``).

        At t = 0 the posterior's variance is taken at t = 1 (improved DDPM's clipping) instead of
        the discretised decoder likelihood: 16-px worlds are never scored in bits.
        """
        sched = self.noise_scheduler
        alpha_bar = sched.alphas_cumprod.to(x0.device)
        prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        beta = 1.0 - alpha_bar / prev
        posterior = beta * (1.0 - prev) / (1.0 - alpha_bar)
        log_posterior = torch.log(torch.cat([posterior[1:2], posterior[1:]]))
        view = (-1, 1, 1, 1)
        a, a_prev, b = alpha_bar[timesteps], prev[timesteps], beta[timesteps]
        c0 = (a_prev.sqrt() * b / (1.0 - a)).view(view)
        ct = ((1.0 - b).sqrt() * (1.0 - a_prev) / (1.0 - a)).view(view)
        mean_q = c0 * x0 + ct * xt
        x0_hat = (xt - (1.0 - a).sqrt().view(view) * eps) / a.sqrt().view(view)
        mean_p = c0 * x0_hat + ct * xt
        log_q = log_posterior[timesteps].view(view)
        frac = (variance.float() + 1.0) / 2.0
        log_p = frac * torch.log(b).view(view) + (1.0 - frac) * log_q
        kl = 0.5 * (-1.0 + log_p - log_q + torch.exp(log_q - log_p))
        kl = kl + 0.5 * (mean_q - mean_p) ** 2 * torch.exp(-log_p)
        return kl.mean((1, 2, 3)) / math.log(2.0)

    def encode(self, prompts: list[str]) -> Conditioning:
        """UNet inputs for ``prompts`` from the live text encoders, through the pipeline's own
        ``encode_prompt`` (the executor's encoder for planted swaps too); a denoiser told the
        guidance scale (FLUX) is told the one the world samples at."""
        cond = encode_prompts(self.train_pipe, self.family, prompts)
        guidance = self.hparams.val_guidance
        return told_guidance(
            self.train_model, cond, SAMPLING["guidance"] if guidance is None else guidance
        )

    @torch.no_grad()
    def latents(self, images: Tensor, pool_index: Tensor | None = None) -> Tensor:
        """What the UNet denoises: scaled VAE latents (latent families) or the images.

        ``pool_index``: the items' indices in the data's pool (``data.pool``), whose renders
        come back unchanged: their posteriors are encoded once and kept (2 KB an item at 8x8x4),
        only the samples are drawn anew, so the latents equal uncached ones draw for draw.
        """
        if self.vae is None:
            return images
        if pool_index is None or any(int(i) not in self.posteriors for i in pool_index):
            moments = self.vae.encode(images.to(self.vae.dtype)).latent_dist.parameters
            if pool_index is not None:
                self.posteriors.update(zip(pool_index.tolist(), moments.unbind()))
        else:
            moments = torch.stack([self.posteriors[int(i)] for i in pool_index])
        posterior = DiagonalGaussianDistribution(moments)
        shift = self.vae.config.get("shift_factor") or 0.0  # as the pipelines decode: / s + shift
        return (posterior.sample() - shift) * self.vae.config.scaling_factor

    def loss_weights(self, timesteps: Tensor) -> Tensor:
        """(B,) per-sample loss weights: all ones (and for flow matching, whose σ draw weighs
        instead), or Min-SNR-γ's ``min(SNR, γ) / SNR`` (``/ (SNR + 1)`` for velocity targets,
        whose loss is already ``SNR + 1`` times larger)."""
        gamma = self.hparams.snr_gamma
        if gamma is None or self.flow:
            return torch.ones(len(timesteps), device=timesteps.device)
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alpha_bar / (1.0 - alpha_bar)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return snr.clamp(max=gamma) / (snr + 1.0)
        return snr.clamp(max=gamma) / snr

    def planted_swaps(
        self, batch: dict, full: Tensor | None = None, alone: dict[str, Tensor] | None = None
    ) -> list[PromptSwap]:
        """The prompt swaps that show sites outside a planted window the removed captions.

        Args:
            batch: ``caption`` (B,) and ``variants`` (one list of B captions per entry of
                ``caption_variants``).
            full: (B,) bool, samples left with the full caption everywhere (drawn if None).
            alone: attribute -> (B,) the position in its window of the one site that reads it,
                or -1 where the whole window does (drawn with ``planted_alone_p`` if None).

        Returns:
            Swaps of (sites, caption) over the samples that need them; none for natural
            training, for ``full`` samples, and where removal changes nothing. With a global
            text path, one more per caption reads the all-removed caption there (no sites).
        """
        if not self.planted:
            return []
        captions = list(batch["caption"])
        n = len(captions)
        if full is None:
            full = torch.rand(n) < self.hparams.planted_full_p
        if alone is None:
            alone = self.draw_alone(n)
        variant = dict(zip(self.caption_variants, batch["variants"]))
        groups: dict[tuple[str, int], list[int]] = {}
        pooled: dict[str, list[int]] = {}
        for b in range(n):
            if full[b]:
                continue
            seen = {
                a: w if int(alone[a][b]) < 0 else [w[int(alone[a][b])]]
                for a, w in self.planted.items()
            }
            for s in range(self.n_sites):
                removed = tuple(a for a in self.planted_names if s not in seen[a])
                if removed and variant[removed][b] != captions[b]:
                    groups.setdefault((variant[removed][b], b), []).append(s)
            everything = variant[self.planted_names][b]
            if self.family.pooled and everything != captions[b]:
                pooled.setdefault(everything, []).append(b)
        merged: dict[tuple[tuple[int, ...], str], list[int]] = {}
        for (text, b), site_ids in groups.items():
            merged.setdefault((tuple(site_ids), text), []).append(b)
        swaps = [PromptSwap(s, text, samples=tuple(b)) for (s, text), b in merged.items()]
        swaps += [PromptSwap((), t, samples=tuple(b), pooled=True) for t, b in pooled.items()]
        return swaps

    def draw_alone(self, n: int) -> dict[str, Tensor]:
        """Per planted attribute, (n,): a random window position where the sample plants it at one
        site alone (probability ``planted_alone_p``), else -1. Nothing is drawn when it is 0."""
        p = self.hparams.planted_alone_p
        draws = {}
        for attribute, window in self.planted.items():
            if p == 0.0:
                draws[attribute] = torch.full((n,), -1)
                continue
            position = torch.randint(len(window), (n,))
            draws[attribute] = torch.where(torch.rand(n) < p, position, -1)
        return draws

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def on_train_start(self) -> None:
        # DDP seeds every process alike (so their weights start alike); past that, each must
        # draw its own noise, timesteps and planted choices, or the halves of a batch share them
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.net)

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_warmup_cosine(
            self.net.parameters(),
            hp.lr,
            hp.weight_decay,
            hp.warmup_steps,
            int(self.trainer.estimated_stepping_batches),
            hp.min_lr_ratio,
            decay=hp.lr_schedule == "cosine",
        )

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, captions: list[str], seeds: list[int]) -> Tensor:
        """(B, 3, S, S) images in [0, 1] from the EMA weights, as the exported pipeline makes them.

        Sampling goes through the pipeline's own ``__call__`` (the world's scheduler, steps and
        guidance unless overridden), with row i's starting noise drawn from ``seeds[i]`` alone.
        """
        hp = self.hparams
        model = self.ema_model()
        pipe = model.pipeline
        options = {}
        takes = inspect.signature(pipe.__call__).parameters
        if "clean_caption" in takes:
            options["clean_caption"] = False  # IF's web-caption cleaning (needs bs4): not ours
        if "use_resolution_binning" in takes:
            options["use_resolution_binning"] = False  # PixArt's bins know no 16-px images
        options.update(call_options(model))  # SD3's T5 length, FLUX's size
        out = pipe(
            list(captions),
            num_inference_steps=hp.val_steps or SAMPLING["steps"],
            guidance_scale=SAMPLING["guidance"] if hp.val_guidance is None else hp.val_guidance,
            generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
            output_type="np",  # [0, 1] in every family (IF's "pt" stays in [-1, 1])
            **options,
        )
        return torch.from_numpy(out.images).permute(0, 3, 1, 2).float()

    def _evaluate(self, batch: dict, stage: str) -> dict:
        images = self.generate(batch["caption"], batch["seed"].tolist())
        scores = probe_scores(self.reader.read(images * 2.0 - 1.0), batch)
        for key, values in scores.items():
            if len(values):
                metric = self.accuracy[stage][key]
                metric.update(values)
                self.log(f"{stage}/{key}", metric, prog_bar=key == "all", batch_size=len(values))
        return {"images": images, "captions": list(batch["caption"])}

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluate(batch, "test")

    # ---- export -------------------------------------------------------------------------------
    def export(self, folder: str | Path, record: dict) -> Path:
        """Write the EMA model as the family's diffusers pipeline folder, plus the world's files.

        ``DiffusionPipeline.from_pretrained(folder)`` loads it without this package. Beside
        ``model_index.json`` it carries what makes it a world: ``loco_world.json`` (planted
        windows, sampler defaults, how it was made), the vocabulary and the readers' weights.
        The folder appears whole or not at all (written aside, then renamed).
        """
        folder = Path(folder)
        net = copy.deepcopy(self.ema.module)
        net[self.family.denoiser].to(memory_format=torch.contiguous_format)
        pipe = self._pipeline(net)
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(self.vocab_path, tmp / WORLD_FILES["vocab"])
        shutil.copyfile(READER_WEIGHTS, tmp / WORLD_FILES["readers"])
        record = {
            **record,
            "family": self.hparams.family,
            "world": {
                **WORLD_FILES,
                "sampling": SAMPLING,
                "planted": self.planted,
                "scorer": WORLD_SCORER,
            },
            "planted_full_p": self.hparams.planted_full_p if self.planted else None,
            "parameters": self.parameter_counts(),
            "module": {k: v for k, v in self.hparams.items() if not k.startswith("_")},
        }
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        log.info("exported the EMA world model to %s", folder)
        return folder
