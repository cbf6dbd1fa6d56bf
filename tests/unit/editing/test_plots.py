"""Figures are drawn without pyplot's global state: importing them leaves the user's matplotlib
backend alone (a notebook's stays interactive), and they still render headless PNGs."""

import subprocess
import sys


def test_figures_render_to_png_and_leave_the_backend_alone(tmp_path):
    script = f"""
import matplotlib
matplotlib.use("pdf")  # the user's choice, which importing the figures must not override
from loco_lightning.editing.plots import efficacy_specificity, time_to_edit
from loco_lightning.localization.plots import heatmap, layer_bars
table = [{{"m": m, "start": s, "clip_mean": float(m + s)}} for m in (1, 2) for s in range(4 - m)]
layers = [{{"kind": k, "layer": f"up.{{i}}", "clip_mean": float(i)}}
          for i, k in enumerate(["resnet", "attn2", "mlp"])]
edits = [
    {{"method": "unedited", "group": g, "reader": 0.9, "seconds_to_edit": float("nan")}}
    for g in ("efficacy", "generality", "specificity", "reference")
] + [{{"method": "locoedit", "group": "efficacy", "reader": 0.2, "seconds_to_edit": 0.01}}]
figures = [heatmap(table, 4, "clip", "t"), layer_bars(layers, "clip", "t"),
           efficacy_specificity(edits), time_to_edit(edits)]
for i, fig in enumerate(figures):
    fig.savefig({str(tmp_path)!r} + f"/{{i}}.png")
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 4
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
