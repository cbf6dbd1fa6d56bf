"""The one config block every job shares: which diffusion model it runs and how it samples."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from loco_lightning.models import sampling
from loco_lightning.models.pipeline import AUTO, DEFAULT_WORLD, Conditioning, LocoModel, load_model


def weights_digest(module: nn.Module, edge: int = 512) -> str:
    """A short digest of a module's weights (names, shapes, first and last values of each).

    Cheap even for SD-XL, and enough to tell a retrained or edited model from the one a result
    folder was made with, where the source name alone (``world-sd1``) would not.
    """
    h = hashlib.sha1()
    with torch.no_grad():
        for name, p in module.named_parameters():
            flat = p.detach().reshape(-1)
            ends = torch.cat([flat[:edge], flat[-edge:]]).float().cpu().numpy()
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(ends.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Diffusion:
    """The model a job loads and its sampler settings (``model.diffusion`` in every YAML).

    Attributes:
        family: ``auto`` (read from the source's ``model_index.json``) or a family name
            (``sd1``, ``sd2``, ``sdxl``, ``if``), checked against the folder.
        source: hub id, local diffusers folder, packaged world name (``world-sd1``, …), or
            ``miniature`` (random weights of ``family``, to try a config); None: the family's
            default (with ``auto``: ``world-sd1``).
        dtype: weight dtype.
        steps: denoising steps (family default if None).
        guidance: classifier-free guidance scale (family default if None; <= 1 turns it off).
        scheduler: a diffusers scheduler class to sample with instead of the pipeline's own
            (built from its config), e.g. ``DPMSolverMultistepScheduler`` with fewer steps.
    """

    family: Literal[
        "auto", "sd1", "sd2", "sdxl", "if", "pixart", "pixart_sigma", "sana", "sd3", "flux"
    ] = "auto"
    source: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(
                f"model.diffusion.steps={self.steps}: give a number of denoising steps >= 1, or "
                "leave it out for the model's default."
            )
        if self.guidance is not None and not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(
                f"model.diffusion.guidance={self.guidance}: give a finite scale >= 0 (<= 1 turns "
                "guidance off), or leave it out for the model's default."
            )

    def load(self, device: str = "cpu") -> LocoModel:
        """The model, carrying these steps, guidance and scheduler (so every caller samples
        alike, and interventions know whether batches have guidance halves: ``model.cfg``)."""
        model = load_model(self.family, self.source, self.dtype, device)
        model.sampling = {
            "steps": self.steps,
            "guidance": self.guidance,
            "scheduler": self.scheduler,
        }
        return model

    def resolved(self, model: LocoModel) -> dict:
        """These settings with every default filled in from the family: what a result records."""
        fam = model.family
        return asdict(self) | {
            "family": fam.name,
            "source": self.source or (DEFAULT_WORLD if self.family == AUTO else fam.default_source),
            "steps": self.steps or model.steps,
            "guidance": model.guidance if self.guidance is None else self.guidance,
            "scheduler": self.scheduler or type(model.pipeline.scheduler).__name__,
            "weights": weights_digest(model.denoiser),
        }

    def sampler(self, model: LocoModel) -> dict:
        """Keyword arguments of ``denoise``: steps, guidance and a fresh scheduler."""
        return {
            "steps": self.steps or model.steps,
            "guidance": model.guidance if self.guidance is None else self.guidance,
            "scheduler": sampling.make_scheduler(model, self.scheduler),
        }

    def denoise(self, model: LocoModel, cond: Conditioning, seeds: list[int]) -> Tensor:
        """``sampling.denoise`` with these settings: (B, 3, H, W) images in [0, 1]."""
        return sampling.denoise(model, cond, seeds, **self.sampler(model))


def resolved(diffusion: Diffusion, model: LocoModel, scorer: str) -> dict:
    """What a run's hyperparameters leave as None or ``auto``, as it ran: the family, source,
    steps, guidance, scheduler and weights digest, and the CLIP scorer (logged with the
    hyperparameters, so TensorBoard and ``hparams.yaml`` show the settings, not their defaults)."""
    return {"diffusion": diffusion.resolved(model), "clip": scorer}


def log_resolved(module, settings: dict) -> None:
    """``settings`` beside the module's hyperparameters in every logger (``hparams.yaml``)."""
    for logger in module.loggers:
        logger.log_hyperparams({"resolved": settings})
