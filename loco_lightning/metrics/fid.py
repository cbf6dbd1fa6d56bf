"""FID through torchmetrics, with a CLIP image tower (the world) or local Inception weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance


class ClipImageFeatures(nn.Module):
    """A CLIP image tower as FID's feature extractor: floats in [0, 1] -> (B, projection_dim).

    Args:
        model: a model with ``get_image_features(pixel_values)`` (see ``metrics.clip``).
        processor: its processor (takes a list of uint8 (3, H, W) tensors).
    """

    def __init__(self, model: nn.Module, processor) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.num_features = int(model.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        pixels = self.processor(images=list(images.cpu()), return_tensors="pt")["pixel_values"]
        device = next(self.model.parameters()).device
        return self.model.get_image_features(pixels.to(device)).float()


def fid_metric(features: nn.Module | None = None, inception_weights: str | None = None):
    """A ``FrechetInceptionDistance`` on images in [0, 1].

    Args:
        features: a feature extractor module (e.g. :class:`ClipImageFeatures` of WorldCLIP).
        inception_weights: local path of torch-fidelity's Inception weights
            (``weights-inception-2015-12-05-6726825d.pth``); nothing is downloaded.
    """
    if features is not None:
        return FrechetInceptionDistance(feature=features, normalize=True)
    if inception_weights is None or not Path(inception_weights).exists():
        raise FileNotFoundError(
            f"FID needs Inception weights, and {inception_weights!r} is not a file. Download "
            "torch-fidelity's weights-inception-2015-12-05-6726825d.pth once where there is "
            "network and set fid_weights to its local path (nothing is downloaded here)."
        )
    return FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(inception_weights)
    )
