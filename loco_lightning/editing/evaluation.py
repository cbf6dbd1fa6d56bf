"""The evaluation triad for any set of edits, on the same prompts and seeds.

Every editing method (LocoEdit, UCE, TIME, Diff-QuickFix, neurons, fine-tuning baselines) ends
as an :class:`Edit`; this base module generates each one's images beside the unedited model's
and scores efficacy, generality and specificity with CLIP score, FID against the unedited images
and, on the world, the exact readers.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from loco_lightning.editing.data import UNEDITED, EvalItem
from loco_lightning.editing.edits import Edit
from loco_lightning.files import check_folder, markdown_table, save_figure
from loco_lightning.grids import labelled_grid
from loco_lightning.metrics.clip import SampleCLIPScore, load_clip
from loco_lightning.metrics.fid import ClipImageFeatures, fid_metric
from loco_lightning.metrics.readers import world_match
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import Diffusion, log_resolved, resolved
from loco_lightning.models.pipeline import packaged
from loco_lightning.report import write_report

SHOWN = 8  # prompts of the first batch shown per method in the before/after grid


class EditEvaluation(L.LightningModule):
    """Base of every editing module: evaluates ``self.edits`` in validation steps.

    Args:
        diffusion: the model and its sampler settings.
        clip: CLIP scorer (hub id, local folder, ``worldclip``; None: the model's own, its
            world's CLIP or the family's ``openai/clip-vit-large-patch14``); its image tower is
            also the FID feature extractor unless ``fid_weights`` is given.
        fid_weights: local Inception weights for FID on real models (None: CLIP features).
        output_dir: where tables and edit artifacts go.
    """

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/edit/run",
    ) -> None:
        super().__init__()
        check_folder("model.output_dir", output_dir)
        self.diffusion = diffusion
        self.model: LocoModel | None = None
        self.reader_match = None
        self.edits: dict[str, Edit] = {}
        self.automatic_optimization = False  # closed forms: no optimizer, no loss to return
        # DDP wraps only a module with a trainable tensor; the closed forms train none (the scorers
        # are frozen), so this empty one lets `fit` run on several processes
        self.ddp_anchor = nn.Parameter(torch.zeros(0))
        self.table: list[dict] = []
        self.shown: tuple | None = None  # the first batch's prompts and images, for samples.png

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self.model is not None:
            return
        self.model = self.diffusion.load(str(self.device))
        self.model.denoiser.requires_grad_(False)
        self.scorer = hp.clip or self.model.scorer
        log_resolved(self, resolved(self.diffusion, self.model, self.scorer))
        self.clip_score = SampleCLIPScore(packaged(self.scorer))
        self.fid_features = (
            None if hp.fid_weights else ClipImageFeatures(*load_clip(packaged(self.scorer)))
        )
        self.fids = nn.ModuleDict()
        self.triad = nn.ModuleDict()
        self.reader_match = world_match(self.model.world)
        for scorer in (self.clip_score, self.fid_features, self.reader_match):
            if scorer is not None:
                scorer.requires_grad_(False)  # scorers are never trained

    def configure_optimizers(self):
        return []  # closed-form edits take no gradient step; the fine-tuned baselines do

    def training_step(self, batch, batch_idx) -> None:
        """Nothing to train: the edits were solved in ``on_fit_start``."""

    def on_validation_epoch_start(self) -> None:
        """Fresh metrics for every (method, group) cell that is generated (the data's
        ``edited_by`` leaves some out): made on every rank alike, so DDP syncs them."""
        data = self.trainer.datamodule
        data.check_editors(list(self.edits))
        self.groups = list(data.groups)
        self.cells = [
            (m, g) for g in self.groups for m in [UNEDITED, *self.edits] if data.generates(m, g)
        ]
        scores = ["clip", "n"] + ([] if self.reader_match is None else ["reader"])
        triad = {
            metric_key(m, g, s): SumMetric() if s == "n" else MeanMetric()
            for m, g in self.cells
            for s in scores
        }
        self.triad = nn.ModuleDict(triad).to(self.device).double()  # means of counts, exact
        fid = self.hparams.fid_weights
        self.fids = nn.ModuleDict(
            {
                metric_key(m, g): fid_metric(self.fid_features, fid)
                for m, g in self.cells
                if m != UNEDITED
            }
        ).to(self.device)

    def generate(self, items: list[EvalItem]) -> Tensor:
        cond = self.model.encode([it.prompt.prompt for it in items])
        return self.diffusion.denoise(self.model, cond, [it.noise_seed for it in items])

    def validation_step(self, batch: list[EvalItem], batch_idx: int) -> dict | None:
        images = {UNEDITED: self.generate(batch)}
        asked = {}  # each editor's rows: those of the groups it generates
        for name, edit in self.edits.items():
            asked[name] = [i for i, it in enumerate(batch) if (name, it.prompt.group) in self.cells]
            images[name] = images[UNEDITED].clone()  # the rows it skips: never read
            if asked[name]:
                with edit.applied(self.model):
                    images[name][asked[name]] = self.generate([batch[i] for i in asked[name]])
        texts = [it.prompt.score_text or it.prompt.prompt for it in batch]
        expects = [it.prompt.expect for it in batch]
        judged = self.reader_match is not None and all(expects)
        groups = {g: [i for i, it in enumerate(batch) if it.prompt.group == g] for g in self.groups}
        for method, imgs in images.items():
            scores = {"clip": self.clip_score.scores(imgs, texts)}
            if judged:
                scores["reader"] = self.reader_match.scores(imgs, expects)
            for group, idx in groups.items():
                if not idx or (method, group) not in self.cells:
                    continue
                for name, values in scores.items():
                    self.triad[metric_key(method, group, name)].update(values[idx])
                self.triad[metric_key(method, group, "n")].update(len(idx))
                if method != UNEDITED:
                    fid = self.fids[metric_key(method, group)]
                    fid.update(images[UNEDITED][idx], real=True)
                    fid.update(imgs[idx], real=False)
        # before and after, a row per method, for SampleGrid: rows that every editor generated
        common = sorted(set.intersection(*map(set, asked.values()))) if asked else []
        if batch_idx == 0 and common:
            rows = common[:SHOWN]
            shown = {m: imgs[rows].detach().cpu() for m, imgs in images.items()}
            items = [batch[i] for i in rows]
            self.shown = ([f"{it.prompt.prompt} (seed {it.seed})" for it in items], shown)
            return {
                "images": torch.cat([imgs[rows] for imgs in images.values()]),
                "captions": [f"{m}: {it.prompt.prompt}" for m in images for it in items],
            }
        return None

    def on_fit_end(self) -> None:
        """The first batch's before/after grid (``samples.png``: a row per prompt, a column per
        method) and the run's report, after the callbacks wrote the tables, edits and exports."""
        if not (self.trainer.is_global_zero and self.table):
            return
        if self.shown is not None:
            prompts, images = self.shown
            cells = [[images[m][i] for m in images] for i in range(len(prompts))]
            grid = labelled_grid(cells, prompts, list(images))
            save_figure(grid, Path(self.hparams.output_dir) / "samples.png")
        write_report(self.hparams.output_dir)

    def on_validation_epoch_end(self) -> None:
        table = []
        for method, group in self.cells:  # alike on every rank: compute syncs
            n = int(self.triad[metric_key(method, group, "n")].compute())
            if n == 0:
                continue
            entry = {"method": method, "group": group, "n": n}
            for score in ("clip", "reader"):
                key = metric_key(method, group, score)
                if key in self.triad and self.triad[key].update_called:
                    entry[score] = float(self.triad[key].compute())
                    self.log(f"edit/{method}/{group}/{score}", entry[score])
            if method != UNEDITED and n > 1:
                entry["fid"] = float(self.fids[metric_key(method, group)].compute())
                self.log(f"edit/{method}/{group}/fid", entry["fid"])
            if method in self.edits:
                metadata = self.edits[method].metadata
                entry["seconds_to_edit"] = metadata.get("seconds", math.nan)
                entry["empty_drift"] = metadata.get("empty_drift", math.nan)
            table.append(entry)
        self.table = table
        rank_zero_info("Edit evaluation:\n" + markdown_table(table))


def metric_key(method: str, group: str, score: str = "fid") -> str:
    """A metric's name in its ``ModuleDict`` (module names take no dots)."""
    return f"{method}|{group}|{score}".replace(".", "_")
