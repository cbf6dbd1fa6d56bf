"""Figures are drawn without pyplot's global state: importing them leaves the user's matplotlib
backend alone (a notebook's stays interactive), and they still render headless PNGs."""

import subprocess
import sys

from matplotlib.text import Text


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


def texts_overlap(fig) -> list[tuple[str, str]]:
    """Pairs of drawn, non-empty texts of a figure whose boxes intersect, and texts that stick
    out of the figure (tick labels count only for the ticks inside the view)."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ticks = {id(t.label1) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for t in axis.get_major_ticks() + axis.get_minor_ticks()}  # fmt: skip
    shown = {id(t.label1) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for t in axis._update_ticks()}  # fmt: skip
    texts = {id(t): t for t in fig.findobj(Text)}.values()
    boxes = [
        (t.get_text(), t.get_window_extent(renderer))
        for t in texts
        if t.get_visible() and t.get_text().strip() and (id(t) not in ticks or id(t) in shown)
    ]
    page = fig.bbox
    bad = [(a, "figure edge") for a, box in boxes if not page.contains(box.x0, box.y0)
           or not page.contains(box.x1 - 1, box.y1 - 1)]  # fmt: skip
    for i, (a, box) in enumerate(boxes):
        bad += [(a, b) for b, other in list(boxes)[i + 1 :] if box.overlaps(other)]
    return bad


def test_comparison_labels_stay_apart_when_methods_land_on_one_spot():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from loco_lightning.editing.plots import efficacy_specificity, time_to_edit

    methods = ["unedited", "locoedit", "uce", "time", "speed", "rece", "mace_cfr",
               "concept_ablation", "esd_x_all_cross_attention", "neurons_k8"]  # fmt: skip
    table = [
        {"method": m, "group": g, "reader": 0.5, "clip": 0.2, "seconds_to_edit": 0.01 * (i + 1)}
        for i, m in enumerate(methods)
        for g in ("efficacy", "generality", "specificity", "reference")
    ]
    for fig in (efficacy_specificity(table), time_to_edit(table)):
        FigureCanvasAgg(fig)
        assert texts_overlap(fig) == []
