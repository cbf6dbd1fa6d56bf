"""Callbacks that write what a run produced: image grids, tables, heatmaps."""
