"""Labelled image grids: each image in its cell, under its column, beside its row."""

from __future__ import annotations

import pytest
import torch

from loco_lightning.grids import labelled_grid


@pytest.mark.parametrize(
    ("rows", "columns"),
    [(["a red circle -> a circle, seed 0", "row two"], ["none", "0-6", "1"]), (["one"], ["x"])],
)
def test_a_labelled_grid_puts_each_image_under_its_column_and_beside_its_row(rows, columns):
    images = [
        [torch.full((3, 4, 4), (r * 3 + c) / 10) for c in range(len(columns))]
        for r in range(len(rows))
    ]
    fig = labelled_grid(images, rows, columns)
    [ax] = fig.axes  # one composed image: the ticks carry the labels
    assert [t.get_text() for t in ax.get_xticklabels()] == columns
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert [s.replace("\n", " ") for s in shown] == rows
    canvas = ax.images[0].get_array()
    for r, y in enumerate(ax.get_yticks()):
        for c, x in enumerate(ax.get_xticks()):
            # the pixels around each label's tick are that row's and column's image
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    value = float(canvas[round(y + dy), round(x + dx), 0])
                    assert abs(value - (r * 3 + c) / 10) < 1e-6, (r, c, dy, dx)
