"""Figures of localization tables (matplotlib, headless)."""

from __future__ import annotations

import math

import matplotlib
from matplotlib.figure import Figure


def heatmap(table: list[dict], n_sites: int, value: str, title: str) -> Figure:
    """Window start (x) by window size m (y), coloured by the mean ``value`` score."""
    sizes = sorted({r["m"] for r in table if 0 < r["m"] < n_sites})
    grid = [[math.nan] * n_sites for _ in sizes]
    for r in table:
        if r["m"] in sizes and f"{value}_mean" in r:
            grid[sizes.index(r["m"])][r["start"]] = r[f"{value}_mean"]
    fig = Figure(figsize=(max(4, 0.45 * n_sites + 2), 0.5 * len(sizes) + 1.6))
    ax = fig.subplots()
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


def layer_bars(table: list[dict], value: str, title: str) -> Figure:
    """One bar per layer (execution order), coloured by layer kind."""
    kinds = sorted({r["kind"] for r in table})
    colours = {k: matplotlib.colormaps["tab10"](i) for i, k in enumerate(kinds)}
    rows = [r for r in table if f"{value}_mean" in r]
    fig = Figure(figsize=(max(6, 0.12 * len(rows) + 2), 3.2))
    ax = fig.subplots()
    ax.bar(
        range(len(rows)),
        [r[f"{value}_mean"] for r in rows],
        color=[colours[r["kind"]] for r in rows],
    )
    ax.set_xlabel("layer (execution order: UNet, then text encoder)")
    ax.set_ylabel(value)
    ax.set_title(title, fontsize=9)
    for k in kinds:
        ax.bar([], [], color=colours[k], label=k)
    ax.legend(fontsize=6, ncol=min(len(kinds), 4))
    fig.tight_layout()
    return fig
