"""The evaluation triad for any set of edits, on the same prompts and seeds.

Every editing method (LocoEdit, UCE, TIME, Diff-QuickFix, neurons, fine-tuning baselines) ends
as an :class:`Edit`; this base module generates each one's images beside the unedited model's
and scores efficacy, generality and specificity with CLIP score, FID against the unedited images
and, on the world, the exact readers.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from loco_lightning.editing.data import EvalItem
from loco_lightning.editing.edits import Edit
from loco_lightning.metrics.clip import SampleCLIPScore, load_clip
from loco_lightning.metrics.fid import ClipImageFeatures, fid_metric
from loco_lightning.metrics.readers import world_match
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.pipeline import packaged

UNEDITED = "unedited"


class EditEvaluation(L.LightningModule):
    """Base of every editing module: evaluates ``self.edits`` in validation steps.

    Args:
        diffusion: the model and its sampler settings.
        clip: CLIP scorer (hub id, local folder, ``worldclip``); its image tower is also the FID
            feature extractor unless ``fid_weights`` is given.
        fid_weights: local Inception weights for FID on real models (None: CLIP features).
        output_dir: where tables and edit artifacts go.
    """

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        clip: str = "worldclip",
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/edit/run",
    ) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.model: LocoModel | None = None
        self.reader_match = None
        self.edits: dict[str, Edit] = {}
        self.automatic_optimization = False  # closed forms: no optimizer, no loss to return
        self.rows: list[dict] = []
        self.table: list[dict] = []

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self.model is not None:
            return
        self.model = self.diffusion.load(str(self.device))
        self.model.unet.requires_grad_(False)
        self.clip_score = SampleCLIPScore(packaged(hp.clip))
        self.fid_features = (
            None if hp.fid_weights else ClipImageFeatures(*load_clip(packaged(hp.clip)))
        )
        self.fids = torch.nn.ModuleDict()
        self.reader_match = world_match(self.model.world)

    def configure_optimizers(self):
        return []  # closed-form edits take no gradient step; the fine-tuned baselines do

    def training_step(self, batch, batch_idx) -> None:
        """Nothing to train: the edits were solved in ``on_fit_start``."""

    def on_validation_epoch_start(self) -> None:
        self.rows = []
        for fid in self.fids.values():
            fid.reset()

    def _fid(self, method: str, group: str):
        key = f"{method}/{group}"
        if key not in self.fids:
            self.fids[key] = fid_metric(self.fid_features, self.hparams.fid_weights).to(self.device)
        return self.fids[key]

    def generate(self, items: list[EvalItem]) -> Tensor:
        cond = self.model.encode([it.prompt.prompt for it in items])
        return self.diffusion.denoise(self.model, cond, [it.noise_seed for it in items])

    def validation_step(self, batch: list[EvalItem], batch_idx: int) -> None:
        images = {UNEDITED: self.generate(batch)}
        for name, edit in self.edits.items():
            with edit.applied(self.model):
                images[name] = self.generate(batch)
        texts = [it.prompt.score_text or it.prompt.prompt for it in batch]
        expects = [it.prompt.expect for it in batch]
        for method, imgs in images.items():
            clip = self.clip_score.per_sample(imgs, texts).tolist()
            reader = [None] * len(batch)
            if self.reader_match is not None and all(expects):
                reader = self.reader_match.per_sample(imgs, expects).tolist()
            for it, c, r in zip(batch, clip, reader):
                self.rows.append(
                    {
                        "method": method,
                        "group": it.prompt.group,
                        "prompt": it.prompt.prompt,
                        "seed": it.seed,
                        "clip": c,
                        "reader": r,
                    }
                )
            if method != UNEDITED:
                for group in {it.prompt.group for it in batch}:
                    idx = [i for i, it in enumerate(batch) if it.prompt.group == group]
                    fid = self._fid(method, group)
                    fid.update(images[UNEDITED][idx], real=True)
                    fid.update(imgs[idx], real=False)

    def on_validation_epoch_end(self) -> None:
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in self.rows:
            groups.setdefault((row["method"], row["group"]), []).append(row)
        table = []
        order = {"efficacy": 0, "generality": 1, "specificity": 2, "reference": 3}
        for (method, group), rows in sorted(groups.items(), key=lambda kv: order[kv[0][1]]):
            entry = {"method": method, "group": group, "n": len(rows)}
            for score in ("clip", "reader"):
                values = [r[score] for r in rows if r[score] is not None]
                if values:
                    mean = sum(values) / len(values)
                    entry[score] = mean
                    self.log(f"val/{method}/{group}/{score}", mean)
            key = f"{method}/{group}"
            if key in self.fids and len(rows) > 1:
                entry["fid"] = float(self.fids[key].compute())
                self.log(f"val/{key}/fid", entry["fid"])
            if method in self.edits:
                metadata = self.edits[method].metadata
                entry["seconds_to_edit"] = metadata.get("seconds", math.nan)
                entry["empty_drift"] = metadata.get("empty_drift", math.nan)
            table.append(entry)
        self.table = table
        rank_zero_info("Edit evaluation:\n" + markdown(table))


def markdown(table: list[dict]) -> str:
    """The table as GitHub markdown (numbers to 3 decimals)."""
    if not table:
        return "(empty)"
    columns = list(dict.fromkeys(k for row in table for k in row))

    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in table]
    return "\n".join(lines)
