"""Editors as data: frozen specs that YAML can express, each computing an :class:`Edit`.

``compute(model, requests)`` reads the model and returns the edit without changing the model
(ROME's execute); the harness applies it. :func:`run_editor` is the one place an edit is timed.
A new editor is one subclass with a ``name`` (registered on definition) and one YAML entry.
"""

from __future__ import annotations

import json
import math
import random
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from importlib import import_module
from pathlib import Path
from typing import ClassVar, Literal

from lightning.pytorch.utilities import rank_zero_info

from loco_lightning.editing.edits import Edit, load_edit
from loco_lightning.editing.requests import EditRequest, preserve_prompts
from loco_lightning.editing.streams import reused_seconds
from loco_lightning.hooks import sites as all_sites
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import weights_digest

EDITORS: dict[str, type[Editor]] = {}  # name -> class, filled as editor modules are imported
EDITOR_MODULES = ("locoedit", "published", "quickfix", "neurons")

SiteChoice = Literal["all", "locogen", "random"]


@dataclass(frozen=True)
class Editor(ABC):
    """A published or baseline editing method with its hyperparameters."""

    name: ClassVar[str]

    def __init_subclass__(cls, name: str | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
            EDITORS[name] = cls

    @abstractmethod
    def compute(self, model: LocoModel, requests: list[EditRequest]) -> Edit:
        """The edit this method makes for ``requests``; the model is left as it was."""

    def resolve(self, model: LocoModel, locogen: str | None, seed: int) -> Editor:
        """This editor with choices that depend on the run (e.g. LocoGen's window) made."""
        return self

    def check(self) -> None:
        """Refuse what would fail only after minutes of work (a missing file), before a run."""
        return None

    def describe(self) -> dict:
        """What a result records about the method."""
        return {"editor": self.name, "params": asdict(self)}


@dataclass(frozen=True, kw_only=True)
class ClosedForm(Editor):
    """What every closed-form editor shares (keyword-only, after its own settings).

    Attributes:
        solve_dtype: dtype of the solve (``float64``: no float32 rounding, for milliseconds).
        keep_empty: keep the empty prompt's outputs at every edited weight (classifier-free
            guidance's unconditional branch; see ``edit_factor``'s ``keep``).
        keep_rtol: directions of the empty prompt's span below this fraction of its largest
            singular value are left free (a model whose text width is below its context length
            still has room to edit).
    """

    # the sites a closed form edits are text key/value projections: none edits a FLUX
    # single-stream block, whose to_k/to_v project the image too
    site_kinds: ClassVar[tuple[str, ...]] = ("attn2", "added_kv", "joint")

    solve_dtype: Literal["float32", "float64"] = "float64"
    keep_empty: bool = True
    keep_rtol: float = 1e-4

    def __post_init__(self) -> None:
        check_scales(self, "keep_rtol", zero_ok=("keep_rtol",))


@dataclass(frozen=True)
class SiteEditor(Editor):
    """An editor of the denoiser's text-attention sites.

    Attributes:
        sites: site indices, or ``all`` (every site it can edit, as UCE/TIME edit: on FLUX a
            closed form's are the double-stream blocks), ``locogen`` (the window a ``loco
            localize`` run selected) or ``random`` (a window of LocoGen's size that shares no
            site with it, the control).
    """

    sites: tuple[int, ...] | SiteChoice = "all"

    def resolve(self, model: LocoModel, locogen: str | None, seed: int) -> Editor:
        if not isinstance(self.sites, str):
            return self
        if self.sites == "all":
            return replace(self, sites=self.editable(model))
        return replace(self, sites=choose_sites(self.sites, model, locogen, seed))

    def editable(self, model: LocoModel) -> tuple[int, ...]:
        """The sites ``all`` means: every one of a kind the editor edits (``site_kinds``)."""
        kinds = getattr(self, "site_kinds", None)
        return tuple(s.index for s in all_sites(model.denoiser) if kinds is None or s.kind in kinds)

    def site_indices(self, model: LocoModel) -> tuple[int, ...]:
        """The sites to edit: :meth:`editable` for ``all``; other choices must be resolved first."""
        if self.sites == "all":
            return self.editable(model)
        if isinstance(self.sites, str):
            raise ValueError(
                f"sites={self.sites!r} depends on a LocoGen run: resolve(model, locogen, seed) "
                "first (the edit module does), or give site indices."
            )
        return tuple(self.sites)


def registry() -> dict[str, type[Editor]]:
    """Every editor by name (its module imported on first use)."""
    for module in EDITOR_MODULES:
        import_module(f"loco_lightning.editing.{module}")
    return dict(EDITORS)


def locogen_window(folder: str | None, model: LocoModel) -> tuple[int, ...]:
    """The window a ``loco localize`` run on ``model`` selected (its ``selection.json``).

    Raises:
        FileNotFoundError: no selection there.
        ValueError: the selection was made on another model (family, site count, or weights
            of the same dtype differ): its window would name the wrong sites.
    """
    path = Path(folder or "") / "selection.json"
    if not path.exists():
        raise FileNotFoundError(
            f"LocoGen sites were asked for but {path} does not exist: run `loco localize` first "
            "and set locogen to its output_dir, or give the site indices explicitly."
        )
    selection = json.loads(path.read_text())
    made = selection.get("diffusion", {})
    n = len(all_sites(model.denoiser))
    compared = {"family": (made.get("family"), model.family.name)}
    if made.get("dtype") == str(model.denoiser.dtype).removeprefix("torch."):
        # the digest reads the weights as stored, so it compares only within one dtype
        compared["weights"] = (made.get("weights"), weights_digest(model.denoiser))
    if any(i >= n for i in selection["window"]):
        compared["sites"] = (f"up to {max(selection['window'])}", f"0..{n - 1}")
    wrong = [k for k, (was, now) in compared.items() if was is not None and was != now]
    if wrong:
        said = ", ".join(f"{k} {compared[k][0]} there, {compared[k][1]} here" for k in wrong)
        raise ValueError(
            f"locogen={folder!r}: its selection was made on another model "
            f"({made.get('source')}: {said}); run `loco localize` on this model and point "
            "locogen at that run's output_dir."
        )
    if not selection["window"]:
        best = min(selection["best"].items(), key=lambda kv: int(kv[0]))[1]  # smallest m
        rank_zero_info(f"LocoGen found no window within its margin; using m=1 at {best}")
        return (best["start"],)
    return tuple(selection["window"])


def choose_sites(
    choice: SiteChoice, model: LocoModel, locogen: str | None, seed: int
) -> tuple[int, ...]:
    """The site indices of ``locogen`` or ``random`` among ``model``'s sites."""
    found = all_sites(model.denoiser)
    n = len(found)
    located = locogen_window(locogen, model)
    if choice == "locogen":
        return located
    m = len(located)
    # a control shares no site with the located window (any other window if none is disjoint)
    # and is made of the same kinds of site (FLUX: double- or single-stream blocks)
    kinds = {found[i].kind for i in located}
    starts = [
        s
        for s in range(n - m + 1)
        if tuple(range(s, s + m)) != located and {f.kind for f in found[s : s + m]} <= kinds
    ]
    disjoint = [s for s in starts if not set(range(s, s + m)) & set(located)]
    start = random.Random(seed).choice(disjoint or starts or [0])
    return tuple(range(start, start + m))


def check_scales(editor, *names: str, zero_ok: tuple[str, ...] = ()) -> None:
    """Refuse a non-finite, negative or (unless in ``zero_ok``) zero scale, naming it."""
    for name in names:
        value = getattr(editor, name)
        bound = ">= 0" if name in zero_ok else "> 0"
        if not (math.isfinite(value) and (value >= 0 if name in zero_ok else value > 0)):
            raise ValueError(f"{name}={value}: {editor.name}'s {name} must be finite and {bound}.")


def resolve_preserve(editor) -> None:
    """A frozen editor's ``preserve`` as prompts (it may be given as an ``*.edit.yaml`` path)."""
    object.__setattr__(editor, "preserve", tuple(preserve_prompts(editor.preserve)))


@dataclass(frozen=True)
class Saved(Editor, name="saved"):
    """An edit made earlier and saved (a trained ESD-x or Concept Ablation delta, an exported
    LocoEdit): loaded, with the time its training recorded as its time to edit.

    Attributes:
        path: the ``.safetensors`` an edit or baseline run wrote.
    """

    path: str = ""

    def check(self) -> None:
        if not Path(self.path).exists():
            raise FileNotFoundError(
                f"Saved edit {self.path!r} does not exist: train it first (`loco esd --config "
                "configs/esd/world_style.yaml`, `loco ablate --config …`) or drop it."
            )

    def compute(self, model: LocoModel, requests: list[EditRequest]) -> Edit:
        self.check()
        edit = load_edit(self.path)
        family = edit.metadata.get("family", model.family.name)
        if family != model.family.name:
            raise ValueError(
                f"{self.path} was made on family {family!r}, this run edits "
                f"{model.family.name!r}; make the edit on the same model."
            )
        return edit

    def describe(self) -> dict:
        return {"editor": self.name, "path": self.path}


def run_editor(editor: Editor, model: LocoModel, requests: list[EditRequest]) -> Edit:
    """``editor.compute`` timed: ``metadata["seconds"]`` is the time to edit (a saved edit keeps
    the training time it recorded; text streams reused from an earlier editor count as read),
    beside what the method and requests were."""
    if not requests:
        raise ValueError("No edit requests: give at least one {concept, target}.")
    start, reused = time.perf_counter(), reused_seconds()
    edit = editor.compute(model, requests)
    seconds = time.perf_counter() - start + reused_seconds() - reused  # as if it ran alone
    edit.metadata.setdefault("seconds", seconds)
    made_for = edit.fingerprint(model)
    if made_for is not None:  # applying it to other weights, or twice, is refused
        edit.metadata.setdefault("made_for", made_for)
    edit.metadata.setdefault("family", model.family.name)
    edit.metadata.setdefault("requests", [asdict(r) for r in requests])
    for key, value in editor.describe().items():
        edit.metadata.setdefault(key, value)
    return edit
