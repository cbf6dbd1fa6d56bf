"""CLIP score through torchmetrics' ``CLIPScore``, with any CLIP backbone.

torchmetrics takes a callable returning ``(model, processor)``; :func:`load_clip` builds one for a
pinned hub CLIP or a local folder (WorldCLIP included). :class:`ClipFeatures`
adapts transformers 5's output objects back to tensors (torchmetrics issue 3407).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.multimodal.clip_score import CLIPScore

log = logging.getLogger(__name__)


class ClipFeatures(nn.Module):
    """A CLIP-like model exposing ``get_image_features``/``get_text_features`` as tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out) -> Tensor:
        return out if isinstance(out, Tensor) else out.pooler_output

    def get_image_features(self, pixel_values: Tensor) -> Tensor:
        return self._tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return self._tensor(out)


class TensorClipProcessor:
    """Processor for CLIPs without an image-processor file: resize and normalise tensors.

    Args:
        tokenizer: the text tower's tokenizer.
        image_size: side the image tower takes.
        mean: per-channel mean of the normalisation (images in [0, 1] before it).
        std: per-channel standard deviation.
    """

    def __init__(
        self,
        tokenizer,
        image_size: int,
        mean: tuple[float, ...] = (0.5, 0.5, 0.5),
        std: tuple[float, ...] = (0.5, 0.5, 0.5),
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, text=None, images=None, return_tensors="pt", padding=True, **kwargs) -> dict:
        if images is not None:
            x = torch.stack([i.float() for i in images]) / 255.0  # uint8 (3, H, W) -> [0, 1]
            if x.shape[-1] != self.image_size:
                x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
            return {"pixel_values": (x - self.mean) / self.std}
        return dict(self.tokenizer(list(text), return_tensors="pt", padding=padding, **kwargs))


@functools.cache
def load_clip(source: str) -> tuple[ClipFeatures, object]:
    """``(model, processor)`` for torchmetrics from a local folder or a hub id.

    A folder without a (pre)processor config gets a :class:`TensorClipProcessor` built from its
    tokenizer and image size.
    """
    from transformers import AutoTokenizer, CLIPModel, CLIPProcessor

    folder = Path(source).expanduser()
    if folder.exists():
        model = CLIPModel.from_pretrained(folder).eval()
        if any(
            (folder / f).exists() for f in ("preprocessor_config.json", "processor_config.json")
        ):
            return ClipFeatures(model), CLIPProcessor.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return ClipFeatures(model), TensorClipProcessor(
            tokenizer, model.config.vision_config.image_size
        )
    try:
        model = CLIPModel.from_pretrained(source).eval()
        return ClipFeatures(model), CLIPProcessor.from_pretrained(source)
    except OSError as err:
        raise FileNotFoundError(
            f"Cannot load the CLIP scorer {source!r} ({type(err).__name__}): it is not a local "
            "folder and could not be downloaded. Download it once where there is network "
            f"(`hf download {source}`) or set the clip option to a local folder."
        ) from None


class SampleCLIPScore(CLIPScore):
    """torchmetrics ``CLIPScore`` on float images, that can also give each sample's score.

    ``scores`` is a pure function (per-image 100·cos(image, text), not clamped at 0, so weak
    scorers keep their ranking); ``update`` accumulates the same into the metric's states, which
    ``compute`` reduces across DDP ranks.

    Args:
        source: CLIP backbone, see :func:`load_clip`; recorded in every result.
    """

    def __init__(self, source: str = "openai/clip-vit-large-patch14", **kwargs) -> None:
        super().__init__(model_name_or_path=functools.partial(load_clip, source), **kwargs)
        self.source = source

    @torch.no_grad()
    def scores(self, images: Tensor, texts: list[str]) -> Tensor:
        """(B,) CLIP score of each image against its caption.

        Args:
            images: (B, 3, H, W) in [0, 1].
            texts: B captions (cut at the text tower's length).
        """
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} captions; give one each.")
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        device = next(self.model.parameters()).device
        image = self.processor(images=list(pixels), return_tensors="pt")["pixel_values"]
        limit = self.model.config.text_config.max_position_embeddings
        text = self.processor(
            text=list(texts), return_tensors="pt", padding=True, truncation=True, max_length=limit
        )
        a = self.model.get_image_features(image.to(device))
        b = self.model.get_text_features(
            text["input_ids"].to(device), text["attention_mask"].to(device)
        )
        return 100 * F.cosine_similarity(a.float(), b.float(), dim=-1)

    def update(self, images: Tensor, texts: list[str]) -> None:  # type: ignore[override]
        """Accumulate :meth:`scores` (images in [0, 1])."""
        scores = self.scores(images, texts)
        self.score += scores.sum().to(self.score.device)
        self.n_samples += len(scores)
