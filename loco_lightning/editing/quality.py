"""``loco quality``: COCO-style image quality for every editor of a comparison: FID of each
method's images of a captions file against reference images (a folder, or the statistics an
earlier run saved), and CLIP score of each image against its caption."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torchmetrics import MeanMetric

from loco_lightning.editing.data import ItemBatches, csv_rows
from loco_lightning.editing.editors import Editor
from loco_lightning.editing.evaluation import UNEDITED, metric_key
from loco_lightning.editing.module import EditModule
from loco_lightning.editing.requests import EditRequest
from loco_lightning.files import atomic_path, markdown_table
from loco_lightning.metrics.fid import fid_metric
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.sampling import noise_seed

IMAGES = (".png", ".jpg", ".jpeg", ".webp")
REAL = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
STATISTICS = "fid_reference.safetensors"  # what a run saves, to pass as references next time


@dataclass(frozen=True)
class CaptionItem:
    """One image to generate: a caption and the seed of its starting noise."""

    caption: str
    noise_seed: int


class CaptionsData(ItemBatches):
    """Captions of a CSV with a ``caption`` column (COCO's captions, exported; other columns
    are ignored), each generated with every seed.

    Args:
        captions: the CSV.
        limit: the first this many captions (None: all).
        seeds: seeds; caption i under seed s starts from its own noise.
        batch_size: captions per denoiser batch.
    """

    def __init__(
        self,
        captions: str,
        limit: int | None = None,
        seeds: list[int] = [0],  # noqa: B006
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        example = "datasets/quality/world_sample/captions.csv"
        rows = csv_rows("data.captions", captions, f"a CSV with a caption column, e.g. {example}")
        if not rows or "caption" not in rows[0]:
            raise ValueError(f"{captions} has no caption column (or no rows); give one per line.")
        texts = [r["caption"] for r in rows][:limit]
        self.prepared = [
            CaptionItem(c, noise_seed(s, i, "per_prompt"))
            for i, c in enumerate(texts)
            for s in seeds
        ]
        self.batch_size = batch_size

    def items(self) -> list:
        return self.prepared


class QualityModule(EditModule):
    """The edits of a comparison judged on image quality: FID against reference images and CLIP
    score against the captions.

    The references' FID features are computed once (by the FID feature extractor: the model's
    CLIP, or the Inception weights of ``fid_weights``) and saved as ``fid_reference.safetensors``
    in ``output_dir``; give that file as ``references`` to skip the images next time (it is
    refused for another feature extractor).

    Args:
        requests, editors, diffusion, locogen, random_seed, clip, fid_weights, output_dir: see
            :class:`EditModule`.
        references: a folder of reference images (COCO's val images), or a statistics file.
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        editors: dict[str, Editor],
        references: str,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        locogen: str | None = None,
        random_seed: int = 0,
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/quality/run",
    ) -> None:
        super().__init__(
            requests, editors, diffusion, locogen, random_seed, clip, fid_weights, output_dir
        )
        if not Path(references).exists():
            raise FileNotFoundError(
                f"references={references!r} does not exist: give a folder of reference images "
                f"or the {STATISTICS} an earlier run saved."
            )
        self.real: dict[str, Tensor] = {}

    def extractor(self) -> str:
        """What the FID features are: the statistics file records it."""
        return (
            f"inception:{Path(self.hparams.fid_weights).name}"
            if self.hparams.fid_weights
            else (f"clip:{self.scorer}")
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        source = Path(self.hparams.references)
        if source.is_file():
            self.real = self.load_statistics(source)
            return
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGES)
        if len(files) < 2:
            raise ValueError(f"references={str(source)!r} holds {len(files)} images; FID needs 2+.")
        metric = fid_metric(self.fid_features, self.hparams.fid_weights)
        for k in range(0, len(files), 32):
            metric.update(torch.stack([read_image(p) for p in files[k : k + 32]]), real=True)
        self.real = {name: getattr(metric, name).detach().cpu() for name in REAL}
        with atomic_path(Path(self.hparams.output_dir) / STATISTICS) as tmp:
            save_file(
                self.real, tmp, metadata={"features": self.extractor(), "images": str(len(files))}
            )

    def load_statistics(self, path: Path) -> dict[str, Tensor]:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            made = (f.metadata() or {}).get("features")
        if made != self.extractor():
            raise ValueError(
                f"references={str(path)!r} holds FID statistics of {made!r} features, this run "
                f"uses {self.extractor()!r}; give the reference images instead."
            )
        return load_file(str(path))

    def on_validation_epoch_start(self) -> None:
        fid = self.hparams.fid_weights
        self.fids = nn.ModuleDict(
            {m: fid_metric(self.fid_features, fid) for m in [UNEDITED, *self.edits]}
        ).to(self.device)
        for metric in self.fids.values():
            for name, value in self.real.items():
                setattr(metric, name, value.to(getattr(metric, name)))
        self.triad = nn.ModuleDict(
            {metric_key(m, "captions", "clip"): MeanMetric() for m in self.fids}
        )
        self.triad = self.triad.to(self.device).double()

    def validation_step(self, batch: list[CaptionItem], batch_idx: int) -> None:
        captions = [it.caption for it in batch]
        cond = self.model.encode(captions)
        seeds = [it.noise_seed for it in batch]
        for method in self.fids:
            edit = self.edits.get(method)
            with edit.applied(self.model) if edit else contextlib.nullcontext():
                images = self.diffusion.denoise(self.model, cond, seeds)
            self.fids[method].update(images, real=False)
            clip = self.clip_score.scores(images, captions)
            self.triad[metric_key(method, "captions", "clip")].update(clip)

    def on_validation_epoch_end(self) -> None:
        table = []
        for method, metric in self.fids.items():
            row = {"method": method, "n": len(self.trainer.datamodule.items())}
            row["fid"] = float(metric.compute())
            row["clip"] = float(self.triad[metric_key(method, "captions", "clip")].compute())
            for key in ("fid", "clip"):
                self.log(f"quality/{method}/{key}", row[key])
            table.append(row)
        self.table = table
        rank_zero_info(
            "Image quality (FID against the references, CLIP score):\n" + markdown_table(table)
        )

    def figures(self) -> dict:
        return {}


def read_image(path: Path) -> Tensor:
    """(3, H, W) floats in [0, 1] of an image file."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)
