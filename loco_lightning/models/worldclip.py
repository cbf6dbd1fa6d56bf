"""WorldCLIP: a tiny CLIP trained on LocoWorld, the CLIPScore and FID backbone of world runs.

Real models are scored with OpenAI CLIP and Inception; neither knows LocoWorld's invented words nor
its 16-px images, and neither can be downloaded here. WorldCLIP is a transformers ``CLIPModel``
(image tower at 16 px, text tower on the world's word tokenizer) saved as an ordinary folder
(safetensors, config, tokenizer, image processor), so torchmetrics takes it like any CLIP:

    score = SampleCLIPScore("path/to/worldclip")  # loco_lightning.metrics.clip; or its load_clip
    fid = FrechetInceptionDistance(feature=load_worldclip().fid_features(), normalize=True)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    PreTrainedTokenizerBase,
)

from loco_lightning.models.pipeline import packaged


def world_image_processor(size: int) -> CLIPImageProcessor:
    """Maps 0..255 images to [-1, 1], the range LocoWorld images are trained in; no resize/crop."""
    return CLIPImageProcessor(
        do_resize=False,
        do_center_crop=False,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=False,
    )


def build_worldclip(
    tokenizer: PreTrainedTokenizerBase,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    image_size: int = 16,
    patch_size: int = 2,
    projection_dim: int = 64,
) -> WorldCLIP:
    """An untrained WorldCLIP: both towers ``layers`` deep and ``width`` wide."""
    tower = {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**tower, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )
    processor = CLIPProcessor(
        image_processor=world_image_processor(image_size), tokenizer=tokenizer
    )
    return WorldCLIP(CLIPModel(config), processor)


class WorldCLIP(nn.Module):
    """A CLIP model and its processor, with the feature functions world metrics need.

    Args:
        model: the ``CLIPModel``.
        processor: tokenizer plus image processor, as ``CLIPScore`` calls it.
    """

    def __init__(self, model: CLIPModel, processor: CLIPProcessor) -> None:
        super().__init__()
        self.model = model
        self.processor = processor

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    def pixel_values(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [-1, 1] from uint8 images in 0..255 or float images in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        param = next(self.model.parameters())
        return (x * 2.0 - 1.0).to(param.device, param.dtype)

    def image_features(self, images: Tensor) -> Tensor:
        """Projected image embeddings (B, P), not normalized.

        Args:
            images: (B, 3, H, W), uint8 in 0..255 or float in [0, 1] (``denoise`` output).
        """
        # the towers directly: ``get_image_features`` returns a tensor or an output object
        # depending on the transformers version
        pooled = self.model.vision_model(pixel_values=self.pixel_values(images)).pooler_output
        return self.model.visual_projection(pooled)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Padded ids and attention mask, as the text tower was trained on them."""
        tok = self.processor.tokenizer
        out = tok(
            list(texts),
            padding="max_length",
            max_length=tok.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        return {
            "input_ids": out.input_ids.to(device),
            "attention_mask": out.attention_mask.to(device),
        }

    def text_features(self, texts: list[str]) -> Tensor:
        """Projected text embeddings (B, P), not normalized."""
        pooled = self.model.text_model(**self.tokenize(texts)).pooler_output
        return self.model.text_projection(pooled)

    def similarity(self, images: Tensor, texts: list[str]) -> Tensor:
        """(B_images, B_texts) cosine similarities."""
        img = F.normalize(self.image_features(images), dim=-1)
        txt = F.normalize(self.text_features(texts), dim=-1)
        return img @ txt.T

    @torch.no_grad()
    def rank(
        self, images: Tensor, captions: list[str], alternatives: list[list[tuple[str, str]]]
    ) -> dict[str, Tensor]:
        """Whether each image's caption outscores every alternative (per alternative kind too).

        Args:
            images: (B, 3, S, S), uint8 in 0..255 or float in [0, 1].
            captions: B true captions.
            alternatives: per image, ``(what changed, caption)`` pairs (``one_attribute_off``).

        Returns:
            key -> (n,) float tensor of 0/1 for the images that had alternatives of that kind;
            ``rank`` is over all alternatives.
        """
        img = F.normalize(self.image_features(images), dim=-1)  # (B, P)
        texts = list(captions) + [t for alts in alternatives for _, t in alts]
        txt = F.normalize(self.text_features(texts), dim=-1)  # (B + n_alt, P)
        true = (img * txt[: len(captions)]).sum(-1)  # (B,)
        out: dict[str, list[float]] = {}
        offset = len(captions)
        for i, alts in enumerate(alternatives):
            sims = img[i] @ txt[offset : offset + len(alts)].T  # (n_i,)
            offset += len(alts)
            kinds = [what for what, _ in alts]
            out.setdefault("rank", []).append(float((true[i] > sims).all()))
            for what in dict.fromkeys(kinds):
                mask = torch.tensor([k == what for k in kinds])
                out.setdefault(what, []).append(float((true[i] > sims[mask]).all()))
        return {k: torch.tensor(v) for k, v in out.items()}

    def fid_features(self) -> WorldCLIPImageFeatures:
        """The image tower as torchmetrics' ``FrechetInceptionDistance(feature=...)`` module."""
        return WorldCLIPImageFeatures(self)

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``model.safetensors``, ``config.json``, tokenizer and image-processor files."""
        self.model.save_pretrained(folder, safe_serialization=True)
        self.processor.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> WorldCLIP:
        model = CLIPModel.from_pretrained(folder).eval()
        return cls(model, CLIPProcessor.from_pretrained(folder))


class WorldCLIPImageFeatures(nn.Module):
    """FID features: uint8 images (``normalize=False``) or [0, 1] floats (``normalize=True``)."""

    def __init__(self, clip: WorldCLIP) -> None:
        super().__init__()
        self.clip = clip
        self.num_features = clip.model.config.projection_dim

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.clip.image_features(images)


def load_worldclip(source: str | Path | None = None, device: str = "cpu") -> WorldCLIP:
    """Load WorldCLIP from a folder, or the packaged one (``None`` or ``"worldclip"``)."""
    folder = Path(packaged("worldclip" if source is None else str(source)))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a WorldCLIP folder (no config.json); train one with "
            "`loco worldclip fit --config configs/world/clip.yaml` and pass its export folder."
        )
    clip = WorldCLIP.from_pretrained(folder).to(device)
    clip.requires_grad_(False)
    return clip
