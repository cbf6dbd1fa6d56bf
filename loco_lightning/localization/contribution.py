"""The DiT localizer of Zarei et al. (NeurIPS 2025): rank sites by the attention output that the
concept's tokens carry, and take the top K, as a second localizer beside LocoGen.

Per site and denoising step, the conditional sample's score is the mean over image positions of
``‖to_out[0](Σ_{j ∈ concept tokens} A[:, :, j] v_j)‖`` (the reference's default variant, bias of
``to_out[0]`` included), averaged over steps, then over prompts and seeds. It needs one generation
per prompt instead of one per window, but it measures where the concept is *read*, not where
removing it changes the image; the two are compared on the planted worlds (README).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from loco_lightning.files import write_json
from loco_lightning.hooks import Record, intervene, sites
from loco_lightning.localization.base import Localizer
from loco_lightning.localization.data import TraceItem
from loco_lightning.localization.plots import site_bars
from loco_lightning.localization.results import aggregate
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.tokenizers import concept_positions


class ContributionModule(Localizer):
    """Attention contribution of the concept's tokens at every site; the top ``top_k`` sites are
    the selection (``selection.json``, which ``sites: locogen`` of the editors reads as well).

    Args:
        diffusion, clip, output_dir: as for LocoGen (the CLIP only scores the generated images,
            reported beside the table).
        top_k: sites selected (the reference takes 6 of PixArt's 28 blocks).
        locogen: a LocoGen run's folder on the same model, to compare its window with the top K
            (overlap in ``selection.json``, its window marked in the figure).
    """

    selection_only = ("top_k", "locogen")

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        clip: str | None = None,
        top_k: int = 6,
        locogen: str | None = None,
        output_dir: str = "lightning_logs/contribution/run",
    ) -> None:
        if top_k < 1:
            raise ValueError(f"model.top_k={top_k}: select at least 1 site.")
        super().__init__(diffusion, clip, output_dir)
        self.save_hyperparameters()
        self.table_name = "sites"
        self.selection: dict = {}
        self.locogen: list[int] | None = None

    def setup(self, stage: str) -> None:
        self.locogen = self.locogen_window() if self.hparams.locogen else None
        super().setup(stage)
        n = len(sites(self.model.denoiser))
        if self.hparams.top_k > n:
            raise ValueError(
                f"model.top_k={self.hparams.top_k}, but this model has {n} sites; choose 1..{n}."
            )

    @torch.no_grad()
    def contributions(self, items: list[TraceItem]) -> list[dict]:
        """One row per item and site: its concept tokens' contribution, averaged over steps."""
        model = self.model
        tokens = tuple(
            tuple(concept_positions(model.segments, it.pair.original, it.pair.target))
            for it in items
        )
        found = sites(model.denoiser)
        spec = Record(tuple(s.index for s in found), ("contribution",), tokens)
        prompts = [it.pair.original for it in items]
        with intervene(model.denoiser, [spec], cfg=model.cfg) as trace:
            images = self.diffusion.denoise(model, model.encode(prompts), [it.seed for it in items])
        clip, reader = self.scores(images, prompts, [it.pair.expect for it in items])
        rows = []
        for s in found:
            per_step = torch.stack(trace.records[(s.index, "contribution")])  # (steps, items)
            for b, (it, value) in enumerate(zip(items, per_step.mean(0).tolist())):
                rows.append(
                    {
                        "key": f"{it.key}:{s.index}",
                        "item": it.key,
                        "site": s.index,
                        "path": s.path,
                        "pair": it.pair_index,
                        "seed": it.seed,
                        "contribution": value,
                        "clip": clip[b],
                        "reader": reader[b],
                    }
                )
        return rows

    def validation_step(self, batch: list[TraceItem], batch_idx: int) -> None:
        if batch:
            self.store.append(self.contributions(batch), self.global_rank)

    def on_validation_epoch_end(self) -> None:
        self.trainer.strategy.barrier()
        self.table = aggregate(self.store.rows(), ("contribution",), by=("site",), keep=("path",))
        ranked = sorted(self.table, key=lambda r: -r["contribution_mean"])
        for rank, row in enumerate(ranked):
            row["rank"] = rank + 1
        top = sorted(r["site"] for r in ranked[: self.hparams.top_k])
        self.selection = {"window": top, "top_k": self.hparams.top_k}
        if self.locogen is not None:
            shared = sorted(set(top) & set(self.locogen))
            self.selection |= {"locogen": self.locogen, "overlap": shared}
        rank_zero_info(
            f"Attention contribution: top {self.hparams.top_k} sites {top} ("
            + ", ".join(f"{r['site']}: {r['contribution_mean']:.3g}" for r in ranked[:3])
            + ", …)"
            + (
                f"; LocoGen's window {self.selection['locogen']}, shared "
                f"{self.selection['overlap']}"
                if self.locogen is not None
                else ""
            )
        )

    def locogen_window(self) -> list[int]:
        path = Path(self.hparams.locogen) / "selection.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"model.locogen={self.hparams.locogen!r} has no selection.json; run `loco "
                "localize` on the same model first, or leave locogen out."
            )
        return list(json.loads(path.read_text())["window"])

    def write(self) -> None:
        """The site table, and ``selection.json`` in LocoGen's format (``window``: the top K)."""
        super().write()
        summary = self.selection | {
            "localizer": "attention contribution (Zarei et al.)",
            "clip": self.scorer,
            "diffusion": self.store.fingerprint["diffusion"],
            "seeds": list(self.trainer.datamodule.seeds),
        }
        write_json(Path(self.hparams.output_dir) / "selection.json", summary)

    def figures(self) -> dict:
        return {
            "contribution": site_bars(
                self.table, self.selection["window"], self.selection.get("locogen", ())
            )
        }
