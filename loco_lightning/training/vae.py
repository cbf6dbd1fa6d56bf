"""Training the latent worlds' shared autoencoder: a tiny ``AutoencoderKL`` on LocoWorld renders.

SD-1/2 and SD-XL run in a VAE's latent space, so their worlds need one: 16-px renders to 8×8×4
latents. Validation reads the reconstructions back with the exact attribute readers, since a
small pixel error can still turn a 30 %-intensity stripe or a colour into another value.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor, nn
from torchmetrics import MeanMetric

from loco_lightning.data.world import ATTRIBUTES, AttributeReader, default_vocabulary
from loco_lightning.models.world import RECORD_NAME
from loco_lightning.training.schedules import adamw_warmup_cosine
from loco_lightning.training.world import WarmupEMA

log = logging.getLogger(__name__)


def world_vae(
    channels: tuple[int, ...] = (32, 64), layers: int = 1, latent_channels: int = 4, size: int = 16
) -> AutoencoderKL:
    """An untrained ``AutoencoderKL``: one downsampling per extra entry of ``channels``."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        latent_channels=latent_channels,
        norm_num_groups=min(16, channels[0]),
        sample_size=size,
    )


class WorldVAE(L.LightningModule):
    """Trains the world autoencoder (reconstruction + a small KL term) and reads reconstructions.

    Args:
        channels: encoder/decoder widths; ``len(channels) - 1`` halvings (16 px → 8×8: two).
        layers: ResNet layers per block.
        latent_channels: latent depth (4, as SD's VAE).
        kl_weight: weight of the KL term; small, as in SD's VAE, so latents stay near N(0, I)
            without blurring the renders.
        lr: AdamW peak learning rate (warm-up, then cosine decay to 10 %).
        warmup_steps: linear warm-up.
        ema_decay: decay of the exported weight average.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64),
        layers: int = 1,
        latent_channels: int = 4,
        kl_weight: float = 1e-4,
        lr: float = 1e-3,
        warmup_steps: int = 100,
        ema_decay: float = 0.999,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vae: AutoencoderKL | None = None

    def setup(self, stage: str) -> None:
        if self.vae is not None:
            return
        hp = self.hparams
        self.vae = world_vae(tuple(hp.channels), hp.layers, hp.latent_channels)
        self.ema = WarmupEMA(self.vae, hp.ema_decay)
        self.reader = AttributeReader(default_vocabulary())
        self.metrics = nn.ModuleDict({k: MeanMetric() for k in ("mse", *ATTRIBUTES)})
        self._latents: list[Tensor] = []

    def loss(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction MSE and KL of a batch of (B, 3, S, S) images in [-1, 1]."""
        posterior = self.vae.encode(images).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        return F.mse_loss(recon, images), posterior.kl().mean() / images[0].numel()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        mse, kl = self.loss(batch["image"])
        loss = mse + self.hparams.kl_weight * kl
        n = len(batch["image"])
        self.log_dict({"train/mse": mse, "train/kl": kl, "train/loss": loss}, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.vae)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The EMA model's (latent mean, reconstruction) of images in [-1, 1]."""
        vae = self.ema.module
        mean = vae.encode(images).latent_dist.mode()
        return mean, vae.decode(mean).sample.clamp(-1, 1)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        images = batch["image"]
        latents, recon = self.reconstruct(images)
        self._latents.append(latents)
        self.metrics["mse"].update(F.mse_loss(recon, images, reduction="none").mean((1, 2, 3)))
        read = self.reader.read(recon)
        for a in ATTRIBUTES:
            self.metrics[a].update((read[a] == batch[a]).float())
        for key, metric in self.metrics.items():
            self.log(f"val/{key}", metric, batch_size=len(images))

    def on_validation_epoch_start(self) -> None:
        self._latents = []

    def configure_optimizers(self):
        hp = self.hparams
        steps = int(self.trainer.estimated_stepping_batches)
        return adamw_warmup_cosine(self.vae.parameters(), hp.lr, 0.0, hp.warmup_steps, steps)

    def export(self, folder: str | Path, record: dict) -> Path:
        """Write the EMA autoencoder as a diffusers model folder, with SD's latent scaling.

        ``scaling_factor`` is 1 / the standard deviation of the validation latents, so scaled
        latents have unit variance as the UNet's noise schedule assumes (SD-1: 0.18215).
        """
        folder = Path(folder)
        vae = copy.deepcopy(self.ema.module)
        std = torch.cat(self._latents).std().item() if self._latents else 1.0
        vae.register_to_config(scaling_factor=round(1.0 / std, 5))
        vae.save_pretrained(folder, safe_serialization=True)
        record = {
            **record,
            "latent_std": std,
            "parameters": sum(p.numel() for p in vae.parameters()),
        }
        (folder / RECORD_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        log.info("exported the world autoencoder to %s (scaling %.4f)", folder, 1.0 / std)
        return folder
