"""A run folder's report: ``report.html`` and ``report.md`` beside the results, made from what
the folder holds (its config, the resolved settings, the tables, the figures and sample grids),
so that it can be rebuilt at any time with ``loco report <folder>``."""

from __future__ import annotations

import html
import json
from pathlib import Path

import yaml

from loco_lightning.files import cell, markdown_table, write_text

TABLES = {  # file -> (heading, at most this many rows shown)
    "results.json": ("Evaluation", 200),
    "robustness.json": ("Robustness card (attacks)", 200),
    "scale.json": ("Many concepts at once", 200),
    "i2p.json": ("I2P: flagged rate per method and category", 200),
    "quality.json": ("Image quality (FID, CLIP score)", 200),
    "selection.json": ("LocoGen selection", 1),
    "windows.json": ("Windows (LocoGen)", 60),
    "layers.json": ("Layers (causal tracing)", 80),
}
FIGURES = (  # in this order when present; any other PNG of the folder follows
    "heatmap_clip.png",
    "heatmap_reader.png",
    "windows.png",
    "efficacy_specificity.png",
    "time_to_edit.png",
    "layers_recovery.png",
    "samples.png",
)
COLUMNS = {  # what a reader of the tables needs to know
    "clip": "CLIP score of each image against its prompt (removal: lower on efficacy and "
    "generality; specificity: as unedited)",
    "reader": "share of images the world's exact readers find as the prompt says",
    "fid": "FID to the unedited model's images (specificity: lower is closer)",
    "empty_drift": "relative change of the empty prompt's keys and values (0: the CFG branch kept)",
    "success": "share of attacked images in which the world's exact readers find the concept",
    "amount": "the attack's budget, counted in the unit the budget column names",
    "success_unattacked": "the same method's share without an attack (its own rate)",
}


def provenance(folder: Path) -> dict:
    """What made the run: the resolved model and scorer, the seeds, the command's config."""
    hparams = _yaml(folder / "hparams.yaml") or {}
    config = _yaml(folder / "config.yaml") or {}
    resolved = hparams.get("resolved", {})
    diffusion = resolved.get("diffusion", {})
    out = {
        "model": diffusion.get("source"),
        "family": diffusion.get("family"),
        "weights digest": diffusion.get("weights"),
        "steps": diffusion.get("steps"),
        "guidance": diffusion.get("guidance"),
        "scheduler": diffusion.get("scheduler"),
        "CLIP": resolved.get("clip"),
        "seeds": (config.get("data") or {}).get("seeds"),
        "status": (_json(folder / "run.json") or {}).get("status"),
    }
    return {k: v for k, v in out.items() if v is not None}


def write_report(folder: str | Path, title: str | None = None) -> Path:
    """``report.html`` and ``report.md`` in ``folder`` (atomically); returns the HTML's path."""
    folder = Path(folder)
    title = title or f"loco run {folder.name}"
    facts = provenance(folder)
    tables = {name: _json(folder / name) for name in TABLES if (folder / name).is_file()}
    figures = [f for f in FIGURES if (folder / f).is_file()]
    figures += sorted(p.name for p in folder.glob("*.png") if p.name not in FIGURES)
    config = (folder / "config.yaml").read_text() if (folder / "config.yaml").is_file() else ""
    write_text(folder / "report.md", _markdown(title, facts, tables, figures, config))
    return write_text(folder / "report.html", _html(title, facts, tables, figures, config))


def _rows(data) -> list[dict]:
    if isinstance(data, dict):
        return [{k: v for k, v in data.items() if not isinstance(v, (dict, list))}]
    return list(data or [])


def _markdown(title, facts, tables, figures, config) -> str:
    lines = [f"# {title}", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    for name, data in tables.items():
        heading, most = TABLES[name]
        lines += ["", f"## {heading}", "", markdown_table(_rows(data)[:most])]
    lines += [""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "## Config", "", "```yaml", config.rstrip(), "```", ""]
    return "\n".join(lines)


def _html(title, facts, tables, figures, config) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1><table class='facts'>",
    ]
    parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts.items()]
    parts.append("</table>")
    for name, data in tables.items():
        heading, most = TABLES[name]
        rows = _rows(data)[:most]
        columns = list(dict.fromkeys(k for row in rows for k in row))
        head = "".join(f"<th title='{e(COLUMNS.get(c, ''))}'>{e(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(cell(r.get(c)))}</td>" for c in columns) + "</tr>"
            for r in rows
        )
        notes = "".join(f"<li><b>{e(c)}</b>: {e(COLUMNS[c])}</li>" for c in columns if c in COLUMNS)
        parts.append(f"<h2>{e(heading)}</h2><table><tr>{head}</tr>{body}</table>")
        if notes:
            parts.append(f"<ul class='notes'>{notes}</ul>")
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [
            f"<figure><img src='{e(f)}' alt='{e(f)}'><figcaption>{e(f)}</figcaption></figure>"
            for f in figures
        ]
    parts.append(f"<h2>Config</h2><details><summary>config.yaml</summary><pre>{e(config)}</pre>")
    parts.append("</details></body></html>")
    return "\n".join(parts) + "\n"


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "font-size:13px;text-align:right}th{background:#f3f3f3}.facts th,.facts td{text-align:left}"
    "img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}"
    "figcaption{font-size:12px;color:#555}.notes{font-size:12px;color:#444}"
)


def _yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None
