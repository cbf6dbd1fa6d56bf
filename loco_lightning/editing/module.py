"""LocoEdit as a LightningModule: solve in ``on_fit_start``, evaluate the triad in validation."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_info

from loco_lightning.editing.evaluation import EditEvaluation
from loco_lightning.editing.locoedit import LocoEditParams, apply_locoedit
from loco_lightning.editing.neurons import ActivationEdit, neuron_edit
from loco_lightning.editing.requests import (
    EditRequest,
    KeyTokens,
    edit_requests,
    preserve_prompts,
)
from loco_lightning.hooks import sites as all_sites
from loco_lightning.models.diffusion import Diffusion

SiteChoice = Literal["given", "locogen", "all", "random"]


def locogen_window(folder: str | None) -> tuple[int, ...]:
    """The window a ``loco localize`` run selected (its ``selection.json``)."""
    path = Path(folder or "") / "selection.json"
    if not path.exists():
        raise FileNotFoundError(
            f"LocoGen sites were asked for but {path} does not exist: run `loco localize` first "
            "and set locogen to its output_dir, or give the site indices explicitly."
        )
    selection = json.loads(path.read_text())
    if not selection["window"]:
        best = min(selection["best"].items(), key=lambda kv: int(kv[0]))[1]  # smallest m
        rank_zero_info(f"LocoGen found no window within its margin; using m=1 at {best}")
        return (best["start"],)
    return tuple(selection["window"])


class ClosedFormEditModule(EditEvaluation):
    """Solves the closed-form edit for each site choice, then compares them side by side.

    Args:
        diffusion, clip, fid_weights, output_dir: see
            :class:`EditEvaluation`.
        requests: what to edit (several concepts in one edit are fine), or the path of an edit
            prompt set (``datasets/world/*.edit.yaml``).
        site_choices: which sites to edit, each evaluated as its own method: ``given``
            (``sites``), ``locogen`` (the window in ``locogen/selection.json``), ``all`` (every
            site, as UCE/TIME do), ``random`` (a random window of the same size sharing no
            site with the located one, where one exists).
        sites: explicit site indices for ``given``.
        locogen: output folder of a ``loco localize`` run (holds ``selection.json``).
        lambda_k: ridge strength of the key update.
        lambda_v: ridge strength of the value update.
        key_tokens: ``last_subject`` (reference), ``last_subject_eos`` or ``aligned``.
        preserve: prompts whose keys/values must not move (on in the world configs), or the
            path of an edit prompt set whose ``preserve`` entry to use.
        preserve_scale: weight of the preserve term against the edit term.
        edit_k: edit key projections.
        edit_v: edit value projections.
        random_seed: seed of the ``random`` window.
        solve_dtype: dtype of the closed-form solve (``float64``: no float32 rounding).
        keep_empty: keep the empty prompt's keys and values exactly (classifier-free guidance's
            unconditional branch) at every edited site.
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        site_choices: list[SiteChoice] = ["locogen"],  # noqa: B006
        sites: list[int] | None = None,
        locogen: str | None = None,
        lambda_k: float = 0.01,
        lambda_v: float = 0.01,
        key_tokens: KeyTokens = "last_subject",
        preserve: list[str] | str = [],  # noqa: B006
        preserve_scale: float = 1.0,
        edit_k: bool = True,
        edit_v: bool = True,
        random_seed: int = 0,
        clip: str = "worldclip",
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/edit/run",
        solve_dtype: Literal["float32", "float64"] = "float32",
        keep_empty: bool = False,
    ) -> None:
        super().__init__(diffusion, clip, fid_weights, output_dir)
        self.save_hyperparameters()
        self.requests = edit_requests(requests)
        self.preserve = preserve_prompts(preserve)

    def chosen_sites(self, choice: SiteChoice, given: tuple[int, ...] | None) -> tuple[int, ...]:
        """The site indices of one choice; ``random`` keeps the size of the located window."""
        n = len(all_sites(self.model.unet))
        hp = self.hparams
        if choice == "all":
            return tuple(range(n))
        if choice == "given":
            if not hp.sites:
                raise ValueError("site_choices has 'given' but sites is empty; list site indices.")
            return tuple(hp.sites)
        if choice == "locogen":
            return locogen_window(hp.locogen)
        located = given or locogen_window(hp.locogen)
        m = len(located)
        # a control shares no site with the located window (any other window if none is disjoint)
        starts = [s for s in range(n - m + 1) if tuple(range(s, s + m)) != tuple(located)]
        disjoint = [s for s in starts if not set(range(s, s + m)) & set(located)]
        start = random.Random(hp.random_seed).choice(disjoint or starts or [0])
        return tuple(range(start, start + m))

    def on_fit_start(self) -> None:
        hp = self.hparams
        given = None
        for choice in hp.site_choices:
            chosen = self.chosen_sites(choice, given)
            given = given or (chosen if choice in ("given", "locogen") else None)
            params = LocoEditParams(
                sites=chosen,
                lambda_k=hp.lambda_k,
                lambda_v=hp.lambda_v,
                key_tokens=hp.key_tokens,
                preserve=tuple(self.preserve),
                preserve_scale=hp.preserve_scale,
                edit_k=hp.edit_k,
                edit_v=hp.edit_v,
                solve_dtype=hp.get("solve_dtype", "float32"),
                keep_empty=hp.get("keep_empty", False),
            )
            start = time.perf_counter()
            result = apply_locoedit(self.model, self.requests, params)
            result.metadata["seconds"] = time.perf_counter() - start
            result.metadata["choice"] = choice
            result.undo(self.model.unet)  # evaluation applies each edit in turn
            name = f"locoedit/{choice}"
            self.edits[name] = result
            rank_zero_info(
                f"{name}: sites {list(chosen)} edited in {result.metadata['seconds'] * 1e3:.1f} ms"
            )


class NeuronEditModule(EditEvaluation):
    """Neuron-level editing: ablate the top-k concept neurons of the located sites, for each k.

    Each k is evaluated as its own method, so the table reads as concept removal against k
    (efficacy) beside its quality cost (specificity, FID).

    Args:
        requests: concept prompts are the requests' templates with the concept; the
            concept-free prompts are the same templates without it.
        sites: site indices to search; None: the window of the LocoGen run in ``locogen``.
        locogen: output folder of a ``loco localize`` run (holds ``selection.json``).
        ks: numbers of neurons per site and projection to ablate.
        projections: ``k``, ``v`` or both.
        mode: ``mean`` (outputs replaced by their concept-free mean, via the executor) or
            ``zero`` (weight rows zeroed: a weight edit).
        diffusion, clip, fid_weights, output_dir: see
            :class:`EditEvaluation`.
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        sites: list[int] | None = None,
        locogen: str | None = None,
        ks: list[int] = [10, 50, 200],  # noqa: B006
        projections: list[Literal["k", "v"]] = ["k", "v"],  # noqa: B006
        mode: Literal["mean", "zero"] = "mean",
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        clip: str = "worldclip",
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/neurons/run",
    ) -> None:
        super().__init__(diffusion, clip, fid_weights, output_dir)
        self.save_hyperparameters()
        self.requests = edit_requests(requests)

    def on_fit_start(self) -> None:
        hp = self.hparams
        triples = [t for r in self.requests for t in r.pairs()]
        concept, neutral = [s for s, _, _ in triples], [w for _, w, _ in triples]
        guidance = self.diffusion.guidance_for(self.model)
        sites = tuple(hp.sites) if hp.sites is not None else locogen_window(hp.locogen)
        for k in hp.ks:
            start = time.perf_counter()
            edit = neuron_edit(
                self.model, sites, concept, neutral, k, tuple(hp.projections), hp.mode
            )
            edit.metadata["seconds"] = time.perf_counter() - start
            if isinstance(edit, ActivationEdit):
                edit.cfg = guidance > 1
            self.edits[f"neurons/k={k}"] = edit
