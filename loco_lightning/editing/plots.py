"""Figures of an edit comparison table (matplotlib, headless)."""

from __future__ import annotations

import math

import matplotlib
from matplotlib.figure import Figure


def method_lines(ax, table: list[dict], x: str, y: str, methods: list[str]) -> None:
    """One line with markers per method, ``y`` against ``x`` over its rows of ``table``, in the
    comparison's colours (tab10, in the order of ``methods``)."""
    for i, method in enumerate(methods):
        rows = [r for r in table if r["method"] == method]
        ax.plot(
            [r[x] for r in rows],
            [r.get(y, math.nan) for r in rows],
            marker="o",
            color=matplotlib.colormaps["tab10"](i % 10),
            label=method,
        )


def _score(table: list[dict]) -> str:
    """The exact readers where the table has them (the world), else CLIP score."""
    return "reader" if any("reader" in r for r in table) else "clip"


def efficacy_specificity(table: list[dict]) -> Figure:
    """Each method's concept score on efficacy (filled) and generality (hollow) prompts against
    its score on specificity prompts: a good edit sits low (concept gone) and right (the rest
    kept). The unedited model's reference row, the model's prior, is the dashed line."""
    score = _score(table)
    rows = {(r["method"], r["group"]): r for r in table}
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for i, method in enumerate(methods):
        spec = rows.get((method, "specificity"), {}).get(score, math.nan)
        colour = matplotlib.colormaps["tab10"](i % 10)
        for group, face in (("efficacy", colour), ("generality", "none")):
            value = rows.get((method, group), {}).get(score, math.nan)
            label = method if group == "efficacy" else None
            ax.scatter(spec, value, s=60, facecolors=face, edgecolors=colour, zorder=3, label=label)
    reference = rows.get(("unedited", "reference"), {}).get(score)
    if reference is not None:
        ax.axhline(reference, ls="--", c="grey", lw=1, label="unedited on target prompts")
    # named in a legend beside the axes, not beside the points: methods often land on one spot
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    if score == "reader":
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("concept survival, exact reader (lower: removed)")
        ax.set_xlabel("specificity: attributes read back (higher: kept)")
    else:
        ax.set_ylabel("CLIP score to the concept prompt (lower: removed)")
        ax.set_xlabel("specificity: CLIP score to the prompt (higher: kept)")
    ax.set_title("Efficacy (filled) and generality (hollow) against specificity", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def time_to_edit(table: list[dict]) -> Figure:
    """Seconds to make each edit (log scale): closed forms against fine-tuning."""
    seconds = {}
    for r in table:
        if not math.isnan(r.get("seconds_to_edit", math.nan)):
            seconds[r["method"]] = r["seconds_to_edit"]
    # horizontal bars: the method names read level and never collide, however long
    fig = Figure(figsize=(5.2, 0.32 * len(seconds) + 1.3))
    ax = fig.subplots()
    bars = ax.barh(range(len(seconds)), list(seconds.values()), color="tab:blue")
    ax.set_yticks(range(len(seconds)), list(seconds), fontsize=7)
    ax.invert_yaxis()
    ax.bar_label(bars, [f"{s:.3g} s" for s in seconds.values()], fontsize=7, padding=2)
    ax.set_xscale("log")
    ax.margins(x=0.25)
    ax.set_xlabel("seconds to edit (lower is faster)")
    ax.set_title("Time to edit", fontsize=9)
    fig.tight_layout()
    return fig
