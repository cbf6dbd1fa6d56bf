"""LocoGen: localization by direct effect, evaluated as Lightning validation steps."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from loco_lightning.files import write_json, write_table
from loco_lightning.hooks import sites
from loco_lightning.localization.base import Localizer
from loco_lightning.localization.data import SweepItem
from loco_lightning.localization.generate import generate_items
from loco_lightning.localization.plots import heatmap
from loco_lightning.localization.results import (
    NoSignalError,
    Objective,
    Selection,
    aggregate,
    check_reference,
    select,
)
from loco_lightning.localization.search import Racing
from loco_lightning.models.diffusion import Diffusion


class LocalizationModule(Localizer):
    """Generates every window of a sweep and scores how much of the concept survives.

    For window j of size m, sites j … j+m-1 read the target prompt, every other site the original
    (conditional branch only). Rows are appended to ``output_dir`` batch by batch, so a rerun with
    the same config resumes; at the end the window table and the selection are computed.

    Args:
        diffusion: the model and its sampler (a faster ``scheduler`` with fewer ``steps`` may
            be chosen there).
        cache_kv: project each site's text K/V once per generation (exact, faster).
        pooled: the window also swaps the global text path (SD-XL pooled embeds, IF text-time,
            SD3 pooled_projections).
        objective: ``remove`` (style, object: argmin of the score against the original prompt) or
            ``update`` (fact: argmax against the target prompt).
        clip: CLIP scorer: hub id, local folder, or ``worldclip`` (packaged); None: the model's
            own (its world's CLIP, else the family's).
        score: which score selects windows: ``clip`` (the paper) or ``reader`` (models that
            carry exact readers, i.e. LocoWorld folders: attribute readers against ``expect``).
        margin: how close to the all-sites reference the smallest m must come, as a fraction of
            the gap between the original and the reference score. ``score``, ``margin`` and
            ``require_signal`` only select from the rows: a rerun with new values reselects
            without generating again.
        require_signal: refuse to select when the all-sites reference does not move the score
            in the objective's direction by more than its spread over seeds (the scorer cannot
            see the concept, so an argmin would pick noise); off only to dry-run a config on a
            random-weight miniature.
        racing: race windows instead of generating every window on every prompt and seed
            (``{first: 0.17, grow: 3, drop: 0.1}``): after a sixth of the prompts and seeds,
            windows clearly behind the best of their size, or doing nothing, leave the race.
            The selection is the exhaustive sweep's whenever each size's best window stays in;
            ``bench/localize_cost.py`` checks that on every world. The race ranks windows by
            ``score``, which then decides what is generated.
        decide_at: score each image as the sampler predicts it clean after this fraction of the
            steps (the early decision; 1: the finished images).
        output_dir: results folder; stable, so that a rerun resumes.
    """

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        cache_kv: bool = True,
        pooled: bool = False,
        objective: Objective = "remove",
        clip: str | None = None,
        score: Literal["clip", "reader"] = "clip",
        margin: float = 0.1,
        require_signal: bool = True,
        racing: Racing | None = None,
        decide_at: float = 1.0,
        output_dir: str = "lightning_logs/localize/run",
    ) -> None:
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(
                f"model.margin={margin}: give a finite fraction >= 0 of the gap between the "
                "original and the all-sites reference (0.1 is the default)."
            )
        if not 0 < decide_at <= 1:
            raise ValueError(
                f"model.decide_at={decide_at}: give the fraction of the denoising steps after "
                "which each image is scored, in (0, 1] (1: finished images; e.g. 0.5)."
            )
        super().__init__(diffusion, clip, output_dir)
        self.save_hyperparameters()
        self.search = racing  # (hparams keep it as a dict)
        # a race ranks windows by the score: it then decides what is generated
        self.selection_only = ("margin", "require_signal") + (("score",) if racing is None else ())
        self.selection: Selection | None = None
        self.spent: dict = {}

    @property
    def n_sites(self) -> int:
        return len(sites(self.model.denoiser))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.hparams.score == "reader" and self.reader_match is None:
            raise ValueError(
                f"score: reader needs exact readers, and {self.diffusion.source or 'the model'} "
                "carries none (only LocoWorld folders do, in loco_world.json). Use score: clip."
            )

    def done_keys(self) -> set[str]:
        return self.store.done()

    def next_items(self, items: list[SweepItem]) -> list[SweepItem]:
        """The current round's items not generated yet (empty once the search is over)."""
        hp = self.hparams
        return self.search.plan(items, self.store.rows(), hp.score, hp.objective)

    @property
    def steps_run(self) -> int:
        """Denoising steps each image costs: the sampler's, or the early decision's share."""
        steps = self.diffusion.sampler(self.model)["steps"]
        return max(1, round(self.hparams.decide_at * steps))

    def generate(self, items: list[SweepItem], steps: int | None = None) -> Tensor:
        """(B, 3, H, W) images of the items, scored as the sweep scores them (``steps``: that
        many finished steps instead, as the batch-size probe runs)."""
        hp, sampler = self.hparams, self.diffusion.sampler(self.model)
        stop = self.steps_run if hp.decide_at < 1 and steps is None else None
        sampler["steps"] = steps or sampler["steps"]
        return generate_items(
            self.model, items, cache_kv=hp.cache_kv, pooled=hp.pooled, stop=stop, **sampler
        )

    def validation_step(self, batch: list[SweepItem], batch_idx: int) -> dict | None:
        if not batch:  # the sweep was finished before: nothing to generate
            return None
        hp = self.hparams
        start = time.perf_counter()
        images = self.generate(batch)
        texts = [it.pair.target if hp.objective == "update" else it.pair.original for it in batch]
        clip, reader = self.scores(images, texts, [it.pair.expect for it in batch])
        seconds, steps = (time.perf_counter() - start) / len(batch), self.steps_run
        rows = [
            {
                "key": it.key,
                "pair": it.pair_index,
                "original": it.pair.original,
                "target": it.pair.target,
                "seed": it.seed,
                "m": it.m,
                "start": it.start,
                "window": it.label,
                "clip": c,
                "reader": r,
                "steps": steps,
                "seconds": seconds,
            }
            for it, c, r in zip(batch, clip, reader)
        ]
        self.store.append(rows, self.global_rank)
        return {
            "rows": [(it.pair.original, it.pair.target, it.seed) for it in batch],
            "labels": [it.label for it in batch],
            "images": images,
        }

    def on_validation_epoch_end(self) -> None:
        self.trainer.strategy.barrier()  # every rank's rows are on disk
        hp, rows = self.hparams, self.store.rows()
        self.table = aggregate(rows, ("clip", "reader"))
        try:
            if hp.require_signal:
                check_reference(rows, self.n_sites, hp.objective, hp.score)
        except NoSignalError:
            if self.trainer.is_global_zero:  # the table is still worth reading
                write_table(self.table, hp.output_dir, self.table_name)
            raise
        self.selection = select(self.table, self.n_sites, hp.objective, hp.score, hp.margin)
        sel = self.selection
        cost = self.spent = self.cost(rows)
        self.log_dict(
            {"localize/original": sel.original, "localize/reference": sel.reference}
            | {f"localize/best/m{m}": v for m, (_, v) in sel.best.items()}
            | {f"localize/cost/{k}": float(v) for k, v in cost.items()},
            rank_zero_only=True,
        )
        rank_zero_info(
            f"LocoGen ({hp.score}, {hp.objective}): original {sel.original:.3f}, all-sites "
            f"reference {sel.reference:.3f}; best window per m: "
            + ", ".join(f"m={m}: {s}-{s + m - 1} ({v:.3f})" for m, (s, v) in sel.best.items())
            + f"; selected: {('sites ' + str(list(sel.window))) if sel.window else 'none'}"
            + (f" (m={sel.smallest_m})" if sel.smallest_m else f" within margin {hp.margin}")
            + f"; cost {cost['images']} images, {cost['sample_steps']} sample-steps"
            + (
                f" ({cost['exhaustive_sample_steps'] / cost['sample_steps']:.1f}x fewer than "
                "the exhaustive sweep)"
                if cost["sample_steps"] < cost["exhaustive_sample_steps"]
                else ""
            )
            + f", {cost['seconds']:.0f} s"
        )

    def cost(self, rows: list[dict]) -> dict:
        """What the sweep cost (summed over its rows, so over resumes too), and what generating
        every window on every prompt and seed with finished images would have cost."""
        steps = self.diffusion.sampler(self.model)["steps"]
        return {
            "images": len(rows),
            "sample_steps": sum(r.get("steps", steps) for r in rows),
            "exhaustive_sample_steps": len(self.trainer.datamodule.items()) * steps,
            "seconds": round(sum(r.get("seconds", 0.0) for r in rows), 2),
        }

    def write(self) -> None:
        """The window table, and ``selection.json``: what LocoEdit reads to know where to edit."""
        super().write()
        sel = self.selection
        summary = {
            "window": list(sel.window),
            "smallest_m": sel.smallest_m,
            "best": {str(m): {"start": s, "score": v} for m, (s, v) in sel.best.items()},
            "original": sel.original,
            "reference": sel.reference,
            "score": self.hparams.score,
            "objective": self.hparams.objective,
            "margin": self.hparams.margin,
            "clip": self.scorer,
            "diffusion": self.store.fingerprint["diffusion"],  # model, steps, guidance, sampler
            "seeds": list(self.trainer.datamodule.seeds),
            "search": "exhaustive" if self.search is None else "racing",
            "decide_at": self.hparams.decide_at,
        } | self.spent
        write_json(Path(self.hparams.output_dir) / "selection.json", summary)

    def figures(self) -> dict:
        hp, n = self.hparams, self.n_sites
        text = "target" if hp.objective == "update" else "original"
        better = "higher: the target shows" if hp.objective == "update" else "lower: concept gone"
        out = {}
        if not any(0 < r["m"] < n for r in self.table):  # stopped after the references
            return out
        full = next(r["n"] for r in self.table if r["m"] == 0)
        raced = frozenset((r["m"], r["start"]) for r in self.table if r["n"] < full)
        for value in ("clip", "reader"):
            means = {(r["m"], r["start"]): r.get(f"{value}_mean") for r in self.table}
            if all(v is None for v in means.values()):
                continue
            original, reference = means.get((0, 0)), means.get((n, 0))
            title = (
                f"{value} score per window, against the {text} prompt\n"
                f"original {original:.2f}, all sites {reference:.2f}"
            )
            selected = self.selection.window if value == hp.score else ()
            label = f"{value} score ({better})"
            out[f"heatmap_{value}"] = heatmap(self.table, n, value, title, label, selected, raced)
        return out
