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
    ys, xs = starts(len(rows), h), starts(len(columns), w)
    # composed here, not by torchvision's make_grid, which returns a single image unpadded
    canvas = torch.full((3, ys[-1] + h + PAD, xs[-1] + w + PAD), 1.0)
    for y, row in zip(ys, images):
        for x, image in zip(xs, row):
            canvas[:, y : y + h, x : x + w] = image.clamp(0, 1)
    cell = min(1.6, max(0.55, 22 / max(len(columns), 1)))
    font = 9 if cell >= 1.2 else 6
    fig = Figure(figsize=(2.6 + cell * len(columns), 0.8 + cell * len(rows)), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.1, h_pad=0.1)  # inches around the labels
    ax = fig.add_subplot()
    ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.xaxis.tick_top()
    wide = max(map(len, columns), default=0) * font * 0.6 / 72 > cell  # inches of text
    ax.set_xticks([x + (w - 1) / 2 for x in xs], columns, fontsize=font, rotation=90 if wide else 0)
    labels = ["\n".join(textwrap.wrap(r, 28)) for r in rows]
    ax.set_yticks([y + (h - 1) / 2 for y in ys], labels, fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return fig


def starts(n: int, size: int) -> list[int]:
    """First pixel of each of ``n`` cells of ``size`` pixels along one side of the canvas."""
    return [PAD + i * (size + PAD) for i in range(n)]
