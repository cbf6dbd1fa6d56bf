"""LocoEdit: the closed-form update of the text key/value projections at chosen sites."""

from __future__ import annotations

from dataclasses import dataclass

from loco_lightning.editing.editors import (
    ClosedForm,
    SiteChoice,
    SiteEditor,
    check_scales,
    resolve_preserve,
)
from loco_lightning.editing.edits import WeightEdit
from loco_lightning.editing.kv import Regression, kv_edit
from loco_lightning.editing.requests import EditRequest, KeyTokens, key_positions, preserved
from loco_lightning.models import LocoModel


@dataclass(frozen=True)
class LocoEdit(SiteEditor, ClosedForm, name="locoedit"):
    """LocoEdit (Basu et al., 2024): remap the concept's key-token vectors to the target's at
    the chosen sites (the LocoGen window), keys and values, in closed form (``edit_factor``).

    Attributes:
        sites: see :class:`SiteEditor` (``locogen`` for LocoEdit proper; ``all`` is UCE's
            update with LocoEdit's defaults).
        lambda_k: ridge strength of the key update.
        lambda_v: ridge strength of the value update.
        key_tokens: ``last_subject`` (the reference), ``last_subject_eos`` or ``aligned``.
        preserve: prompts whose keys/values should not move (every position), or the path of an
            ``*.edit.yaml`` whose ``preserve`` entry to use.
        preserve_scale: weight of the preserve term against the edit term.
        edit_k: edit the key projections.
        edit_v: edit the value projections.
        solve_dtype, keep_empty, keep_rtol: see :class:`ClosedForm`.
    """

    sites: tuple[int, ...] | SiteChoice = "locogen"
    lambda_k: float = 0.01
    lambda_v: float = 0.01
    key_tokens: KeyTokens = "last_subject"
    preserve: tuple[str, ...] | str = ()
    preserve_scale: float = 1.0
    edit_k: bool = True
    edit_v: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scales(self, "lambda_k", "lambda_v", "preserve_scale", zero_ok=("preserve_scale",))
        resolve_preserve(self)

    def compute(self, model: LocoModel, requests: list[EditRequest]) -> WeightEdit:
        triples = [t for r in requests for t in r.pairs()]
        positions = key_positions(model.segments, triples, self.key_tokens)
        rows = Regression.of_prompts(
            model,
            [s for s, _, _ in triples],
            [t for _, _, t in triples],
            positions,
            preserved(self, requests),
            keep_empty=self.keep_empty,
        )
        lambdas = {"k": self.lambda_k} if self.edit_k else {}
        lambdas |= {"v": self.lambda_v} if self.edit_v else {}
        return kv_edit(
            model, self.site_indices(model), rows, lambdas, self.preserve_scale,
            self.solve_dtype, self.keep_rtol,
        )  # fmt: skip
