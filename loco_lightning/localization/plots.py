"""Figures of localization tables (matplotlib, headless)."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.patches
from matplotlib.figure import Figure


def heatmap(
    table: list[dict],
    n_sites: int,
    value: str,
    title: str,
    label: str = "",
    selected: tuple[int, ...] = (),
    partial: frozenset[tuple[int, int]] = frozenset(),
) -> Figure:
    """Window start (x) by window size m (y), coloured by the mean ``value`` score; ``label``
    names the colour bar (say which way is better), ``selected`` is outlined, and the (m, start)
    windows in ``partial`` (left a race early: a mean over fewer prompts and seeds) are starred."""
    sizes = sorted({r["m"] for r in table if 0 < r["m"] < n_sites})
    grid = [[math.nan] * n_sites for _ in sizes]
    for r in table:
        if r["m"] in sizes and f"{value}_mean" in r:
            grid[sizes.index(r["m"])][r["start"]] = r[f"{value}_mean"]
    fig = Figure(
        figsize=(max(5.5, 0.45 * n_sites + 2.5), 0.5 * len(sizes) + 2.0), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(n_sites))
    ax.set_yticks(range(len(sizes)), [f"m={m}" for m in sizes])
    ax.set_xlabel("window start (site index)")
    ax.set_title(title, fontsize=9)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):  # dark text on viridis' bright end, light on its dark end
                colour = "black" if image.norm(v) > 0.6 else "white"
                star = "*" if (sizes[i], j) in partial else ""
                ax.text(j, i, f"{v:.2f}{star}", ha="center", va="center", fontsize=7, color=colour)
    if selected and len(selected) in sizes:
        row = sizes.index(len(selected))
        ax.add_patch(
            matplotlib.patches.Rectangle(
                (selected[0] - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2
            )
        )
        ax.plot([], [], color="red", linewidth=2, label=f"selected: sites {list(selected)}")
    if partial:
        ax.plot([], [], " ", label="* left the race early (fewer prompts and seeds)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.colorbar(image, ax=ax).set_label(label, fontsize=8)
    return fig


def layer_bars(table: list[dict], value: str, title: str) -> Figure:
    """One bar per layer (execution order), coloured by layer kind, named on the x axis."""
    kinds = sorted({r["kind"] for r in table})
    colours = {k: matplotlib.colormaps["tab10"](i % 10) for i, k in enumerate(kinds)}
    rows = [r for r in table if f"{value}_mean" in r]
    fig = Figure(figsize=(max(6, 0.16 * len(rows) + 2), 4.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(
        range(len(rows)),
        [r[f"{value}_mean"] for r in rows],
        color=[colours[r["kind"]] for r in rows],
    )
    step = max(1, len(rows) // 60)  # at most ~60 names, so they stay legible
    ax.set_xticks(
        range(0, len(rows), step),
        [short(rows[i]["layer"]) for i in range(0, len(rows), step)],
        rotation=90,
        fontsize=5,
    )
    ax.set_xlabel("layer (execution order: UNet, then text encoder)")
    ax.set_ylabel(value)
    ax.set_title(title, fontsize=9)
    handles = [matplotlib.patches.Patch(color=colours[k], label=k) for k in kinds]
    ax.legend(handles=handles, fontsize=6, ncol=min(len(kinds), 4), title="layer kind")
    return fig


def short(layer: str) -> str:
    """A layer's module path without the words every path has."""
    for long, brief in (("down_blocks.", "down."), ("up_blocks.", "up."), ("attentions.", "attn.")):
        layer = layer.replace(long, brief)
    layer = layer.replace("text_model.encoder.layers.", "te.").replace("encoder.layers.", "layers.")
    return layer.replace("transformer_blocks.", "tb.")


def site_bars(table: list[dict], selected, locogen=()) -> Figure:
    """The attention contribution per site (execution order): the top K filled, the rest grey,
    and LocoGen's window, if given, outlined, so the two localizers read side by side."""
    fig = Figure(figsize=(max(5.5, 0.28 * len(table) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    chosen, window = set(selected), set(locogen)
    ax.bar(
        [r["site"] for r in table],
        [r["contribution_mean"] for r in table],
        yerr=[r.get("contribution_std", 0.0) for r in table],
        color=["tab:orange" if r["site"] in chosen else "tab:grey" for r in table],
        edgecolor=["black" if r["site"] in window else "none" for r in table],
        linewidth=1.5,
        capsize=2,
    )
    handles = [
        matplotlib.patches.Patch(color="tab:orange", label=f"top {len(chosen)}"),
        matplotlib.patches.Patch(color="tab:grey", label="other sites"),
    ]
    if window:
        handles.append(
            matplotlib.patches.Patch(facecolor="none", edgecolor="black", label="LocoGen window")
        )
    ax.legend(handles=handles, fontsize=7)
    ax.set_xticks([r["site"] for r in table], [str(r["site"]) for r in table], fontsize=7)
    ax.set_xlabel("site (execution order)")
    ax.set_ylabel("contribution of the concept's tokens\n(higher: more of it is read here)")
    ax.set_title("Attention contribution per site (Zarei et al.)", fontsize=9)
    return fig
