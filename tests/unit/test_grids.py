"""Labelled image grids: each image in its cell, under its column, beside its row."""

from __future__ import annotations

import torch

from loco_lightning.grids import labelled_grid


def test_a_labelled_grid_puts_each_image_under_its_column_and_beside_its_row():
    images = [[torch.full((3, 4, 4), (r * 3 + c) / 10) for c in range(3)] for r in range(2)]
    fig = labelled_grid(
        images, ["a red circle -> a circle, seed 0", "row two"], ["none", "0-6", "1"]
    )
    [ax] = fig.axes  # one composed image: the ticks carry the labels
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "0-6", "1"]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert "seed 0" in rows[0] and rows[1] == "row two"
    canvas = ax.images[0].get_array()
    for r, y in enumerate(ax.get_yticks()):
        for c, x in enumerate(ax.get_xticks()):
            # the pixels around each label's tick are that row's and column's image
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    value = float(canvas[round(y + dy), round(x + dx), 0])
                    assert abs(value - (r * 3 + c) / 10) < 1e-6, (r, c, dy, dx)
