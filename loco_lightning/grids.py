"""Labelled image grids (matplotlib, headless): a row label, a column title, an image per cell."""

from __future__ import annotations

import textwrap

import torch
from matplotlib.figure import Figure
from torch import Tensor

PAD = 1  # pixels of white between cells


def labelled_grid(images: list[list[Tensor]], rows: list[str], columns: list[str]) -> Figure:
    """``images[r][c]`` (3, H, W) in [0, 1], row ``r`` labelled ``rows[r]`` on the left and
    column ``c`` titled ``columns[c]`` above; cells shrink as columns grow, so wide sweeps stay one
    readable figure. The cells are one composed image in one axes (ticks carry the labels): an
    axes per cell made a sweep's grid cost seconds to lay out and draw."""
    h, w = images[0][0].shape[-2:]
    canvas = torch.full((3, PAD + len(rows) * (h + PAD), PAD + len(columns) * (w + PAD)), 1.0)
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            y, x = PAD + r * (h + PAD), PAD + c * (w + PAD)
            canvas[:, y : y + h, x : x + w] = image.clamp(0, 1)
    cell = min(1.6, max(0.55, 22 / max(len(columns), 1)))
    font = 9 if cell >= 1.2 else 6
    fig = Figure(figsize=(2.6 + cell * len(columns), 0.8 + cell * len(rows)), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.1, h_pad=0.1)  # inches around the labels
    ax = fig.add_subplot()
    ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.xaxis.tick_top()
    centre = PAD + (torch.arange(len(columns)) + 0.5) * (w + PAD) - PAD / 2 - 0.5
    wide = max(map(len, columns), default=0) * font * 0.6 / 72 > cell  # inches of text
    ax.set_xticks(centre.tolist(), columns, fontsize=font, rotation=90 if wide else 0)
    centre = PAD + (torch.arange(len(rows)) + 0.5) * (h + PAD) - PAD / 2 - 0.5
    ax.set_yticks(centre.tolist(), ["\n".join(textwrap.wrap(r, 28)) for r in rows], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return fig
