"""Labelled image grids (matplotlib, headless): a row label, a column title, an image per cell."""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from torch import Tensor


def labelled_grid(images: list[list[Tensor]], rows: list[str], columns: list[str]) -> Figure:
    """``images[r][c]`` (3, H, W) in [0, 1], row ``r`` labelled ``rows[r]`` on the left and
    column ``c`` titled ``columns[c]``; cells shrink as columns grow, so wide sweeps stay one
    readable figure."""
    cell = min(1.6, max(0.55, 22 / max(len(columns), 1)))
    font = 9 if cell >= 1.2 else 6
    fig = Figure(figsize=(2.6 + cell * len(columns), 0.5 + cell * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=font)
        label = "\n".join(textwrap.wrap(rows[r], 28))
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    return fig


def single_image(image: Tensor) -> Figure:
    """One image at its own size, without axes."""
    h, w = image.shape[-2:]
    fig = Figure(figsize=(w / 100, h / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.axis("off")
    return fig
