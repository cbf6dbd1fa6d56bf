"""Writes a LocoGen sweep's table and heatmap, and shows the heatmap in TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402

from loco_lightning.localization.results import write_table  # noqa: E402


def heatmap(table: list[dict], n_sites: int, value: str, title: str) -> plt.Figure:
    """Window start (x) by window size m (y), coloured by the mean ``value`` score."""
    sizes = sorted({r["m"] for r in table if 0 < r["m"] < n_sites})
    grid = [[math.nan] * n_sites for _ in sizes]
    for r in table:
        if r["m"] in sizes and f"{value}_mean" in r:
            grid[sizes.index(r["m"])][r["start"]] = r[f"{value}_mean"]
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n_sites + 2), 0.5 * len(sizes) + 1.6))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(n_sites))
    ax.set_yticks(range(len(sizes)), [f"m={m}" for m in sizes])
    ax.set_xlabel("window start (site index)")
    ax.set_title(title, fontsize=9)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


class SweepReport(L.Callback):
    """After a LocoGen sweep: ``windows.csv``/``.json`` and ``heatmap_<score>.png`` in the run's
    output folder, and the heatmaps as TensorBoard images."""

    @rank_zero_only
    def on_validation_end(self, trainer, pl_module) -> None:
        if not pl_module.table:
            return
        folder = Path(pl_module.hparams.output_dir)
        write_table(pl_module.table, folder)
        sel = pl_module.selection
        for value in ("clip", "reader"):
            if not any(f"{value}_mean" in r for r in pl_module.table):
                continue
            title = (
                f"{value} score; original {sel.original:.2f}, all sites {sel.reference:.2f}"
                if value == pl_module.hparams.score
                else f"{value} score"
            )
            fig = heatmap(pl_module.table, pl_module.n_sites, value, title)
            fig.savefig(folder / f"heatmap_{value}.png", dpi=120)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"localize/heatmap_{value}", fig)
            plt.close(fig)
