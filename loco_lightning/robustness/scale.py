"""``loco scale``: N concepts of one kind erased at once (N = 1, …, all) by every closed-form
editor, with time to edit against N and UnlearnCanvas's accuracies on the world's grid.

The world is a grid as UnlearnCanvas is (its styles x objects): every prompt names a shape, a
colour and a style, and the exact readers say which of them an image shows. Erasing some values
of one attribute (colours, say) is judged on every value's prompts: unlearning accuracy (the
erased values no longer read), in-domain retain accuracy (the other values of that attribute
still read) and cross-domain retain accuracy (the other attributes still read, on every prompt).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure
from torch import nn
from torchmetrics import SumMetric

from loco_lightning.data.world.captions import caption_for
from loco_lightning.data.world.prompt_sets import _pick, prompt_sets
from loco_lightning.data.world.render import Scene
from loco_lightning.data.world.vocab import default_vocabulary
from loco_lightning.editing import locoedit, neurons, published, quickfix  # noqa: F401 (YAML names)
from loco_lightning.editing.data import ItemBatches
from loco_lightning.editing.editors import Editor, run_editor
from loco_lightning.editing.evaluation import UNEDITED, EditEvaluation, metric_key
from loco_lightning.editing.plots import method_lines
from loco_lightning.editing.requests import EditRequest
from loco_lightning.editing.streams import shared_streams
from loco_lightning.files import markdown_table
from loco_lightning.metrics.fid import fid_metric
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.sampling import noise_seed

Attribute = Literal["shape", "colour", "style"]
ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "style")


@dataclass(frozen=True)
class GridItem:
    """One image of the grid: a prompt naming every attribute, and its seeds."""

    value: str  # the value of the erased attribute it names ("red")
    prompt: str
    expect: dict[str, str]  # every attribute it names
    seed: int
    noise_seed: int


class GridData(ItemBatches):
    """Prompts of the world's grid for every value of one attribute.

    Args:
        attribute: the attribute whose values are erased (``colour``: 8, ``shape``: 6,
            ``style``: 4).
        per_value: prompts per value (random shapes/colours/styles for the other attributes).
        seeds: seeds; every prompt is generated with each.
        batch_size: prompts per denoiser batch.
        seed: seed of the prompts drawn.
    """

    def __init__(
        self,
        attribute: Attribute = "colour",
        per_value: int = 6,
        seeds: list[int] = [0],  # noqa: B006
        batch_size: int = 48,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if per_value < 1 or not seeds:
            raise ValueError(f"per_value={per_value}, seeds={seeds}: give 1 or more of each.")
        self.attribute = attribute
        vocab = default_vocabulary()
        self.values = tuple(vocab.values(attribute))
        templates = [
            t for t in vocab.templates_of("plain") if {"shape", "colour", "style"} <= set(t.slots)
        ]
        self.prepared = []
        i = 0
        for value in self.values:
            scenes = [
                s
                for s in itertools.starmap(Scene, itertools.product(*map(vocab.values, ATTRIBUTES)))
                if getattr(s, attribute) == value
            ]
            captions = [caption_for(s, t, vocab=vocab) for s in scenes for t in templates]
            for caption in _pick(captions, per_value, seed):
                expect = {a: caption.values[a] for a in ATTRIBUTES}
                for s in seeds:
                    self.prepared.append(
                        GridItem(value, caption.text(), expect, s, noise_seed(s, i, "per_prompt"))
                    )
                i += 1
        self.batch_size = batch_size

    def items(self) -> list:
        return self.prepared


class ScaleModule(EditEvaluation):
    """Every editor erasing the first N values of the grid's attribute at once, for each N.

    The values are taken in one random order (``order_seed``), so each N's set holds the
    smaller ones'. Each value's request is its ``loco prompts`` edit set (``<attribute>_<value>``),
    with the preserve prompts that name another erased value left out.

    Args:
        editors: row name -> editor (closed forms: ``LocoEdit`` with fixed or ``all`` sites,
            ``UCE``, ``TIME``, ``RECE``, ``SPEED``, ``MACE``).
        sizes: the numbers of values erased at once, ascending (each at most the attribute's
            number of values; ``-1`` for all of them).
        order_seed: seed of the order the values are taken in.
        diffusion, clip, fid_weights, output_dir: see :class:`EditEvaluation`.
    """

    def __init__(
        self,
        editors: dict[str, Editor],
        sizes: list[int] = [1, 2, 4, -1],  # noqa: B006
        order_seed: int = 0,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/scale/run",
    ) -> None:
        super().__init__(diffusion, clip, fid_weights, output_dir)
        if not editors:
            raise ValueError("model.editors is empty: name at least one editor (see EDITORS).")
        if not sizes or any(n == 0 or n < -1 for n in sizes):
            raise ValueError(f"sizes={sizes}: give numbers of values >= 1 (or -1: all of them).")
        self.save_hyperparameters(ignore=["editors"])
        self.editors = dict(editors)
        self.scaled = {}  # (editor, N) -> Edit
        self.erased: dict[int, tuple[str, ...]] = {}

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        values = list(data.values)
        sizes = [n for n in self.hparams.sizes if n != -1]  # -1 (all) may equal the last one
        sizes += [len(values)] if -1 in self.hparams.sizes and len(values) not in sizes else []
        if sizes != sorted(set(sizes)) or max(sizes) > len(values):
            raise ValueError(
                f"sizes={self.hparams.sizes}: give ascending numbers of {data.attribute} values "
                f"up to {len(values)} (the world's {data.attribute}s; -1: all of them)."
            )
        for editor in self.editors.values():
            editor.check()
        random.Random(self.hparams.order_seed).shuffle(values)
        self.erased = {n: tuple(values[:n]) for n in sizes}
        self.attribute = data.attribute
        super().setup(stage)

    def requests(self, erased: tuple[str, ...]) -> list[EditRequest]:
        """One request per erased value, keeping no preserve prompt that names another."""
        out = []
        for value in erased:
            edit = prompt_sets(f"{self.attribute}_{value}")[1]
            request = EditRequest(**edit["request"])
            out.append(replace(request, preserve=tuple(edit["preserve"])))
        return [
            replace(r, preserve=tuple(p for p in r.preserve if not any(o.mentions(p) for o in out)))
            for r in out
        ]

    def on_fit_start(self) -> None:
        for n, erased in self.erased.items():
            requests = self.requests(erased)
            with shared_streams():  # the editors of one N read the same prompts' streams
                for name, editor in self.editors.items():
                    resolved = editor.resolve(self.model, None, 0)
                    edit = run_editor(resolved, self.model, requests)
                    self.scaled[name, n] = edit
                    rank_zero_info(f"{name}, {n} at once: {edit.metadata['seconds'] * 1e3:.0f} ms")

    def methods(self) -> list[tuple[str, int]]:
        """(editor, N) of every edit, after the unedited model (N = 0)."""
        return [(UNEDITED, 0), *self.scaled]

    def counts(self) -> list[str]:
        """What is counted per method: hits and images of the erased values, the kept ones,
        the other attributes, and of each value."""
        groups = [
            "erased",
            "kept",
            "cross",
            *(f"value_{v}" for v in self.trainer.datamodule.values),
        ]
        return [f"{g}_{c}" for g in groups for c in ("hit", "n")]

    def count(self, method: str, n: int, key: str):
        return self.triad[metric_key(method, str(n), key)]

    def rate(self, method: str, n: int, group: str) -> float:
        images = float(self.count(method, n, f"{group}_n").compute())
        hits = float(self.count(method, n, f"{group}_hit").compute())
        return hits / images if images else math.nan

    def on_validation_epoch_start(self) -> None:
        self.triad = (
            nn.ModuleDict(
                {
                    metric_key(m, str(n), c): SumMetric()
                    for m, n in self.methods()
                    for c in self.counts()
                }
            )
            .to(self.device)
            .double()
        )
        fid = self.hparams.fid_weights
        self.fids = nn.ModuleDict(
            {metric_key(m, str(n)): fid_metric(self.fid_features, fid) for m, n in self.scaled}
        ).to(self.device)

    def validation_step(self, batch: list[GridItem], batch_idx: int) -> None:
        cond = self.model.encode([it.prompt for it in batch])
        seeds = [it.noise_seed for it in batch]
        unedited = self.diffusion.denoise(self.model, cond, seeds)
        runs = [(UNEDITED, 0, unedited)]
        for (name, n), edit in self.scaled.items():
            with edit.applied(self.model):
                runs.append((name, n, self.diffusion.denoise(self.model, cond, seeds)))
        own = [{self.attribute: it.expect[self.attribute]} for it in batch]
        others = [{a: v for a, v in it.expect.items() if a != self.attribute} for it in batch]
        for name, n, images in runs:
            hit = self.reader_match.scores(images, own)
            cross = self.reader_match.scores(images, others)
            erased = torch.tensor([it.value in self.erased.get(n, ()) for it in batch])
            erased = erased.to(hit.device)
            groups = {"erased": erased, "kept": ~erased, "cross": None}
            for v in {it.value for it in batch}:
                groups[f"value_{v}"] = torch.tensor([it.value == v for it in batch])
            for group, rows in groups.items():
                hits = cross if group == "cross" else hit[rows.to(hit.device)]
                self.count(name, n, f"{group}_hit").update(hits.sum())
                self.count(name, n, f"{group}_n").update(len(hits))
            if name != UNEDITED:
                fid = self.fids[metric_key(name, str(n))]
                fid.update(unedited, real=True)
                fid.update(images, real=False)

    def on_validation_epoch_end(self) -> None:
        table = []
        for name, n in self.methods():
            entry = {
                "method": name,
                "erased": n,
                "values": " ".join(self.erased.get(n, ())),
                "unlearning_accuracy": 1 - self.rate(name, n, "erased") if n else math.nan,
                "in_domain_retain": self.rate(name, n, "kept"),
                "cross_domain_retain": self.rate(name, n, "cross"),
            }
            # efficacy per value: its own attribute read on its prompts (erased: lower is better)
            entry |= {v: self.rate(name, n, f"value_{v}") for v in self.trainer.datamodule.values}
            if name != UNEDITED:
                entry["fid"] = float(self.fids[metric_key(name, str(n))].compute())
                entry["seconds_to_edit"] = self.scaled[name, n].metadata["seconds"]
            for key in ("unlearning_accuracy", "in_domain_retain", "cross_domain_retain"):
                if not math.isnan(entry[key]):
                    self.log(f"scale/{name}/{n}/{key}", entry[key])
            table.append(entry)
        self.table = table
        rank_zero_info("Many concepts at once:\n" + markdown_table(table))

    def figures(self) -> dict[str, Figure]:
        return {"scale": scale_plot(self.table)} if self.table else {}


def scale_plot(table: list[dict]) -> Figure:
    """Time to edit, unlearning and in-domain / cross-domain retain accuracy against the number
    of values erased at once, one line per editor."""
    panels = [
        ("seconds_to_edit", "seconds to edit"),
        ("unlearning_accuracy", "unlearning accuracy (erased gone)"),
        ("in_domain_retain", "in-domain retain (others kept)"),
        ("cross_domain_retain", "cross-domain retain (other attributes)"),
    ]
    methods = list(dict.fromkeys(r["method"] for r in table if r["method"] != UNEDITED))
    fig = Figure(figsize=(13, 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (key, label) in zip(axes, panels):
        method_lines(ax, table, "erased", key, methods)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("values erased at once")
        ax.grid(alpha=0.3)
        if key == "seconds_to_edit":
            ax.set_yscale("log")
        else:
            ax.set_ylim(-0.05, 1.05)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    fig.tight_layout()
    return fig
