"""Training the LocoWorld text-to-image model from scratch: natural, planted and bidirectional.

The UNet (the ``world`` family's configuration) and a tiny text encoder are trained jointly with
epsilon prediction. Validation does not trust the loss (it plateaus long before the model is
ready, WORLD.md): it generates a fixed probe set with the family's own sampler and reads every
image back with the exact attribute readers.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric
from transformers import CLIPTokenizer, PreTrainedTokenizerBase

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
from loco_lightning.hooks.executor import check_sites
from loco_lightning.models import LocoModel, get_family
from loco_lightning.models.pipeline import packaged
from loco_lightning.models.world import (
    RECORD_NAME,
    SAMPLING,
    WORLD_FILES,
    TextEncoderKind,
    world_pipeline,
    world_scheduler,
    world_text_encoder,
    world_unet,
)
from loco_lightning.training.schedules import warmup_cosine

log = logging.getLogger(__name__)

# Probe-accuracy keys: per-attribute on plain prompts, "all" = all three right, then one per
# named-concept kind (every attribute the concept fixes right).
ACCURACY_KEYS = (*ATTRIBUTES, "all", *CONCEPT_ATTRIBUTES)


PADDING = {"sd1": "<|endoftext|>", "sd2": "!"}  # SD-1 pads with its EOS token, SD-2 with "!"


def world_tokenizer(family: str = "sd1") -> CLIPTokenizer:
    """The worlds' BPE tokenizer (``world-tokenizer``), padded the way ``family`` pads."""
    return CLIPTokenizer.from_pretrained(packaged("world-tokenizer"), pad_token=PADDING[family])


def encode_text(
    text_encoder: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str]
) -> Tensor:
    """Text context (B, T, D) with gradients, computed as the pipeline's ``encode_prompt`` does.

    Training must see exactly the context the pipeline will give the UNet at inference: same
    padding to ``model_max_length``, no attention mask, last hidden state.
    """
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(next(text_encoder.parameters()).device)
    return text_encoder(ids)[0]


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


class WorldDiffusion(L.LightningModule):
    """Trains the world's UNet and text encoder from scratch; validates by reading generations.

    Planted training: for each attribute in ``planted``, only the named window of sites reads
    captions that contain it; every other site reads the caption with that attribute removed
    (through the intervention executor), except on ``planted_full_p`` of the samples, where every
    site reads the full caption. The windows are then the known answer for localization.

    Args:
        text_encoder: ``causal`` (CLIP-like) or ``bidirectional`` (T5-like) text encoder.
        text_layers: transformer layers of the text encoder.
        text_heads: attention heads of the text encoder.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        lr_schedule: ``constant`` after warm-up, or ``cosine`` decay to ``min_lr_ratio * lr`` at
            the last step.
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``.
        ema_decay: decay of the weight average used for validation and export.
        train_timesteps: DDPM training timesteps (``squaredcos_cap_v2`` betas).
        snr_gamma: Min-SNR-γ loss weighting (Hang et al., 2023): each sample's loss is weighted
            by ``min(SNR, γ) / SNR``, so nearly clean timesteps stop dominating and the noisy
            ones, where shape and colour are decided, learn sooner. None: plain MSE.
        planted: attribute -> the site indices that alone read it (e.g. ``colour: [5, 6]``);
            empty for natural training.
        planted_full_p: fraction of samples whose every site reads the full caption.
        val_steps: sampling steps of validation generations (None: the family's).
        val_guidance: guidance scale of validation generations (None: the family's).
        vocab: vocabulary YAML (None: the packaged one); must match the data's.
        channels_last: channels-last UNet weights and inputs (faster convolutions on CPU).
        family: the family whose pipeline format, world-size UNet and sampler are trained
            (``sd1``: epsilon prediction; ``sd2``: linear projections, v-prediction); latent
            families train on the packaged world autoencoder's latents.
    """

    def __init__(
        self,
        text_encoder: TextEncoderKind = "causal",
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
        val_steps: int | None = None,
        val_guidance: float | None = None,
        vocab: str | None = None,
        channels_last: bool = True,
        family: Literal["sd1", "sd2"] = "sd1",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.family = get_family(family)
        with torch.device("meta"):
            n_sites = len(sites(world_unet(family)))
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
        if not 0.0 <= planted_full_p <= 1.0:
            raise ValueError(f"planted_full_p={planted_full_p} must be a probability")
        self.planted = planted
        # Each site reads the caption without the planted attributes whose window it is not in;
        # distinct removal sets become the dataset's caption variants.
        removal = {
            s: tuple(a for a in ATTRIBUTES if a in planted and s not in planted[a])
            for s in range(n_sites)
        }
        self.caption_variants = tuple(sorted({r for r in removal.values() if r}))
        self.variant_sites = tuple(
            tuple(s for s, r in removal.items() if r == v) for v in self.caption_variants
        )
        self.net: nn.ModuleDict | None = None

    # ---- construction -------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        hp = self.hparams
        vocab = Vocabulary.from_yaml(hp.vocab) if hp.vocab else default_vocabulary()
        self.vocab_path = hp.vocab or DEFAULT_VOCAB_PATH
        self.tokenizer = world_tokenizer(hp.family)
        self.net = nn.ModuleDict(
            {
                "unet": world_unet(hp.family),
                "text_encoder": world_text_encoder(
                    self.tokenizer, hp.text_encoder, hp.text_layers, hp.text_heads
                ),
            }
        )
        self.vae = None
        if self.family.space == "latent":  # frozen: the world autoencoder is shared, not trained
            self.vae = AutoencoderKL.from_pretrained(packaged("world-vae")).requires_grad_(False)
        check_sites(
            sites(self.net["unet"]),
            sorted({s for w in self.planted.values() for s in w}),
            "planted",
        )
        self.ema = AveragedModel(self.net, multi_avg_fn=EMAWarmup(hp.ema_decay), use_buffers=False)
        self.ema.requires_grad_(False)
        if hp.channels_last:
            self.net["unet"].to(memory_format=torch.channels_last)
            self.ema.module["unet"].to(memory_format=torch.channels_last)
        self.noise_scheduler = DDPMScheduler(
            hp.train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=world_scheduler(hp.family).config.prediction_type,
        )
        self.reader = AttributeReader(vocab)
        self.accuracy = nn.ModuleDict(
            {
                split: nn.ModuleDict({k: MeanMetric() for k in ACCURACY_KEYS})
                for split in ("val", "test")
            }
        )

    def ema_model(self) -> LocoModel:
        """The EMA weights as a ``LocoModel`` (shared tensors, nothing copied), for sampling."""
        pipe = self._pipeline(self.ema.module["unet"], self.ema.module["text_encoder"])
        return LocoModel(self.family, pipe)

    def _pipeline(self, unet: nn.Module, text_encoder: nn.Module):
        return world_pipeline(
            self.hparams.family,
            unet,
            text_encoder,
            self.tokenizer,
            world_scheduler(self.hparams.family),
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
    ) -> Tensor:
        """Epsilon-prediction MSE on a batch; noise, timesteps and planted draws may be given.

        Args:
            batch: ``image`` (B, 3, S, S) in [-1, 1], ``caption`` (B,), and for planted
                training ``variants`` (one list of B captions per caption variant).
            noise: (B, 3, S, S) noise (drawn if None).
            timesteps: (B,) training timesteps (drawn if None).
            full: (B,) bool, samples whose every site reads the full caption (drawn if None).
        """
        x0 = self.latents(batch["image"])
        noise = torch.randn_like(x0) if noise is None else noise
        if timesteps is None:
            timesteps = torch.randint(0, self.hparams.train_timesteps, (len(x0),), device=x0.device)
        xt = self.noise_scheduler.add_noise(x0, noise, timesteps)
        if self.hparams.channels_last:
            xt = xt.contiguous(memory_format=torch.channels_last)
        captions = list(batch["caption"])
        unet, text_encoder = self.net["unet"], self.net["text_encoder"]
        context = encode_text(text_encoder, self.tokenizer, captions)  # (B, T, D)
        swaps = self.planted_swaps(batch, full)
        executor = contextlib.nullcontext()
        if swaps:
            executor = intervene(unet, swaps, encode=self._encode_with_grad, cfg=False)
        with executor:
            eps = unet(xt, timesteps, encoder_hidden_states=context).sample
        target = noise
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(x0, noise, timesteps)
        per_sample = F.mse_loss(eps.float(), target.float(), reduction="none").mean((1, 2, 3))
        return (per_sample * self.loss_weights(timesteps)).mean()

    @torch.no_grad()
    def latents(self, images: Tensor) -> Tensor:
        """What the UNet denoises: scaled VAE latents (latent families) or the images."""
        if self.vae is None:
            return images
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return posterior.sample() * self.vae.config.scaling_factor

    def loss_weights(self, timesteps: Tensor) -> Tensor:
        """(B,) per-sample loss weights: all ones, or Min-SNR-γ's ``min(SNR, γ) / SNR``
        (``/ (SNR + 1)`` for velocity targets, whose loss is already ``SNR + 1`` times larger)."""
        gamma = self.hparams.snr_gamma
        if gamma is None:
            return torch.ones(len(timesteps), device=timesteps.device)
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alpha_bar / (1.0 - alpha_bar)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return snr.clamp(max=gamma) / (snr + 1.0)
        return snr.clamp(max=gamma) / snr

    def planted_swaps(self, batch: dict, full: Tensor | None = None) -> list[PromptSwap]:
        """The prompt swaps that show sites outside a planted window the removed captions.

        Args:
            batch: ``caption`` (B,) and ``variants`` (one list of B captions per entry of
                ``caption_variants``).
            full: (B,) bool, samples left with the full caption everywhere (drawn if None).

        Returns:
            One swap per (variant caption, sites), over the samples that need it; none for
            natural training, for ``full`` samples, and where removal changes nothing.
        """
        if not self.caption_variants:
            return []
        captions = list(batch["caption"])
        if full is None:
            full = torch.rand(len(captions)) < self.hparams.planted_full_p
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for texts, site_ids in zip(batch["variants"], self.variant_sites):
            for b, text in enumerate(texts):
                if not full[b] and text != captions[b]:
                    groups.setdefault((text, site_ids), []).append(b)
        return [PromptSwap(s, p, samples=tuple(b)) for (p, s), b in groups.items()]

    def _encode_with_grad(self, prompts: list[str]) -> tuple[Tensor, None]:
        """The executor's encoder for planted swaps: the text encoder learns through them too."""
        return encode_text(self.net["text_encoder"], self.tokenizer, prompts), None

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.diffusion_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.net)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        factor = warmup_cosine(
            hp.warmup_steps,
            int(self.trainer.estimated_stepping_batches),
            hp.min_lr_ratio,
            decay=hp.lr_schedule == "cosine",
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, captions: list[str], seeds: list[int]) -> Tensor:
        """(B, 3, S, S) images in [0, 1] from the EMA weights, as the exported pipeline makes them.

        Sampling goes through the pipeline's own ``__call__`` (the world's scheduler, steps and
        guidance unless overridden), with row i's starting noise drawn from ``seeds[i]`` alone.
        """
        hp = self.hparams
        out = self.ema_model().pipeline(
            list(captions),
            num_inference_steps=hp.val_steps or SAMPLING["steps"],
            guidance_scale=SAMPLING["guidance"] if hp.val_guidance is None else hp.val_guidance,
            generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
            output_type="pt",
        )
        return out.images.float()

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
        unet = copy.deepcopy(self.ema.module["unet"]).to(memory_format=torch.contiguous_format)
        pipe = self._pipeline(unet, copy.deepcopy(self.ema.module["text_encoder"]))
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(self.vocab_path, tmp / WORLD_FILES["vocab"])
        shutil.copyfile(READER_WEIGHTS, tmp / WORLD_FILES["readers"])
        record = {
            **record,
            "family": self.hparams.family,
            "text_encoder": self.hparams.text_encoder,
            "world": {**WORLD_FILES, "sampling": SAMPLING, "planted": self.planted},
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
