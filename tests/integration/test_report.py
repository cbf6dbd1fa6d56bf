"""A run's report renders in a real browser with its figures: headless Chromium takes a
screenshot of ``report.html`` and the heatmap's and grid's colours are in it."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
from PIL import Image

from loco_lightning.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page, out, tmp_path) -> np.ndarray:
    assert CHROMIUM, (
        "the report test needs Debian's chromium (the README's test command installs it)"
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    flags += ["--no-first-run", "--disable-background-networking", "--disable-component-update"]
    flags += ["--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}", "--hide-scrollbars"]
    flags += ["--window-size=1300,3000", f"--screenshot={out}", page.as_uri()]
    subprocess.run([CHROMIUM, *flags], check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def near(shot: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    """How many pixels of the screenshot are within ``tolerance`` of ``colour``."""
    return int((np.abs(shot - np.array(colour)).max(axis=2) <= tolerance).sum())


def test_a_localize_run_reports_in_html_and_markdown_and_the_browser_shows_its_figures(tmp_path):
    out = tmp_path / "run"
    main(
        [
            "localize",
            "--config",
            "configs/localize/world_shape.yaml",
            "--model.output_dir",
            str(out),
            "--model.diffusion.steps",
            "3",
            "--data.window_sizes",
            "[1, 2]",
            "--data.seeds",
            "[0]",
        ]
    )
    page = out / "report.html"
    text = page.read_text()
    markdown = (out / "report.md").read_text()
    for needle in (
        "world-sd1",
        "worldclip",
        "LocoGen selection",
        "heatmap_clip.png",
        "windows.png",
    ):
        assert needle in text and needle in markdown, needle
    shot = screenshot(page, tmp_path / "shot.png", tmp_path)
    assert near(shot, (253, 231, 37)) > 500  # viridis' yellow: the heatmaps are drawn
    assert near(shot, (68, 1, 84), 20) > 200  # and its purple (the windows that remove the shape)
    blank = near(shot, (255, 255, 255), 0) / shot[..., 0].size
    assert blank < 0.97
    main(["report", str(out)])  # rebuilt from the folder alone, the same
    assert (out / "report.html").read_text() == text
