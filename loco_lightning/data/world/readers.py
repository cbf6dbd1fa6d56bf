"""Exact attribute readers: the ground truth every LocoWorld experiment is scored with.

Colour is read without learning (median chromaticity of the bright pixels, nearest palette
colour); shape and style by a ~66k-parameter CNN trained on augmented renders
(`reader_training.py`), whose weights ship beside this file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from loco_lightning.data.world.vocab import Vocabulary, default_vocabulary

READER_WEIGHTS = Path(__file__).with_name("reader_weights.safetensors")
READER_SIZE = 16
BRIGHT = 90.0  # of 255: above the 30% stripes/fill of every palette colour, below its full value


def read_colour(images: torch.Tensor, rgb: torch.Tensor, threshold: float = BRIGHT) -> torch.Tensor:
    """Nearest palette colour to the median chromaticity of each image's bright pixels.

    Each pixel is divided by its max channel first, so anti-aliased edges and dim generations
    (the same hue, darker) vote for the hue they carry. Images with no pixel above `threshold`
    fall back to their brightest pixels.

    Args:
        images: (B, 3, H, W) float in [-1, 1].
        rgb: (K, 3) palette in 0..255.

    Returns:
        (B,) long palette indices.
    """
    x = (images.float().clamp(-1, 1) + 1.0) * 127.5  # (B, 3, H, W) in 0..255
    peak = x.amax(dim=1).flatten(1)  # (B, H*W)
    bright = (peak > threshold) | (peak >= peak.amax(dim=1, keepdim=True))
    chroma = (x.flatten(2) / peak.clamp_min(1e-3)[:, None]).masked_fill(~bright[:, None], torch.nan)
    median = chroma.nanmedian(dim=2).values  # (B, 3)
    palette = rgb.float().to(x.device)
    palette = palette / palette.amax(dim=1, keepdim=True)
    return torch.cdist(median, palette).argmin(dim=1)


class ShapeStyleNet(nn.Module):
    """A small CNN reading shape and style from a (B, 3, 16, 16) image in [-1, 1].

    No normalisation or dropout layers, so train/eval mode never changes what it reads.
    """

    def __init__(self, n_shapes: int = 6, n_styles: int = 4, width: int = 32) -> None:
        super().__init__()
        self.n_shapes = n_shapes

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*block(3, width), *block(width, 2 * width))
        self.head = nn.Linear(2 * width, n_shapes + n_styles)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns shape logits (B, n_shapes) and style logits (B, n_styles)."""
        logits = self.head(self.features(images).mean(dim=(2, 3)))
        return logits[:, : self.n_shapes], logits[:, self.n_shapes :]


class AttributeReader(nn.Module):
    """Reads (shape, colour, style) indices of LocoWorld images; the world's exact judge.

    Weights load when the reader is constructed (never at import). Images of another size are
    resized to 16 px for the CNN; colour is read at native size.

    Args:
        vocab: the vocabulary whose value order the indices follow (packaged one by default).
        weights: a safetensors file from `reader_training` (the packaged one by default).
    """

    def __init__(self, vocab: Vocabulary | None = None, weights: str | Path | None = None) -> None:
        super().__init__()
        self.vocab = vocab or default_vocabulary()
        self.net = ShapeStyleNet(len(self.vocab.shapes), len(self.vocab.styles))
        path = Path(weights) if weights is not None else READER_WEIGHTS
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        for attribute in ("shapes", "styles"):
            trained = tuple(meta.get(attribute, "").split(","))
            if trained != getattr(self.vocab, attribute):
                raise ValueError(
                    f"{path} reads {attribute} {trained}, but the vocabulary has "
                    f"{getattr(self.vocab, attribute)}; retrain with reader_training"
                )
        self.net.load_state_dict(load_file(path))
        self.net.requires_grad_(False)
        self.register_buffer("rgb", torch.tensor(self.vocab.rgb, dtype=torch.float32), False)

    @classmethod
    def from_world(cls, folder: str | Path, files: dict[str, str]) -> AttributeReader:
        """The readers a world folder carries: its vocabulary and its readers' weights.

        Args:
            folder: the world's pipeline folder.
            files: ``{"vocab": ..., "readers": ...}`` file names (its ``loco_world.json``).
        """
        folder = Path(folder)
        return cls(Vocabulary.from_yaml(folder / files["vocab"]), folder / files["readers"])

    @property
    def values(self) -> dict[str, tuple[str, ...]]:
        """Attribute -> the value names its indices stand for."""
        return {a: self.vocab.values(a) for a in ("shape", "colour", "style")}

    @torch.no_grad()
    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Attribute indices of (B, 3, H, W) images in [-1, 1]: dict of (B,) long tensors."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        x = images.float().clamp(-1, 1)
        small = x
        if x.shape[-2:] != (READER_SIZE, READER_SIZE):
            small = F.interpolate(
                x,
                size=(READER_SIZE, READER_SIZE),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        shape_logits, style_logits = self.net(small.to(self.net.head.weight.dtype))
        colour = read_colour(x, self.rgb)
        return {"shape": shape_logits.argmax(1), "colour": colour, "style": style_logits.argmax(1)}

    forward = read
