"""Labelled image grids: each image in its cell, under its column, beside its row."""

from __future__ import annotations

import torch

from loco_lightning.grids import labelled_grid


def test_a_labelled_grid_puts_each_image_under_its_column_and_beside_its_row():
    images = [[torch.full((3, 4, 4), (r * 3 + c) / 10) for c in range(3)] for r in range(2)]
    fig = labelled_grid(
        images, ["a red circle -> a circle, seed 0", "row two"], ["none", "0-6", "1"]
    )
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:3]] == ["none", "0-6", "1"]
    assert all(ax.get_title() == "" for ax in axes[3:])
    assert "seed 0" in axes[0].get_ylabel() and axes[3].get_ylabel() == "row two"
    for i, ax in enumerate(axes):
        value = float(ax.images[0].get_array()[0, 0, 0])
        assert abs(value - i / 10) < 1e-6
