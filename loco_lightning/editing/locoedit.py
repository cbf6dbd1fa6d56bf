"""LocoEdit: the closed-form update of the text key/value projections at chosen sites."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from loco_lightning.editing.closed_form import edit_factor, edited_weight
from loco_lightning.editing.requests import EditRequest, KeyTokens, key_positions
from loco_lightning.hooks import sites
from loco_lightning.hooks.executor import check_sites
from loco_lightning.hooks.sites import CrossAttnSite
from loco_lightning.models import LocoModel


@dataclass(frozen=True)
class LocoEditParams:
    """How to edit.

    Attributes:
        sites: site indices to edit (e.g. the LocoGen window).
        lambda_k: ridge strength for the key projections.
        lambda_v: ridge strength for the value projections.
        key_tokens: which token positions are remapped (see ``key_positions``).
        preserve: prompts whose key/value outputs must not move (every token position).
        preserve_scale: weight of the preserve term (see ``edit_factor``).
        edit_k: edit the key projections.
        edit_v: edit the value projections.
        solve_dtype: dtype of the closed-form solve (``float64`` for exactness; see
            ``edit_factor``).
        keep_empty: keep the empty prompt's keys and values exactly (the unconditional branch
            that classifier-free guidance subtracts): the update is confined to the complement of
            the span of its token inputs (see ``edit_factor``'s ``keep``).
    """

    sites: tuple[int, ...]
    lambda_k: float = 0.01
    lambda_v: float = 0.01
    key_tokens: KeyTokens = "last_subject"
    preserve: tuple[str, ...] = ()
    preserve_scale: float = 1.0
    edit_k: bool = True
    edit_v: bool = True
    solve_dtype: Literal["float32", "float64"] = "float32"
    keep_empty: bool = False

    def __post_init__(self) -> None:
        for name in ("lambda_k", "lambda_v"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value}: the ridge strength must be finite and > 0.")
        if not (math.isfinite(self.preserve_scale) and self.preserve_scale >= 0):
            raise ValueError(
                f"preserve_scale={self.preserve_scale}: the preserve weight must be finite and "
                ">= 0 (0 turns the preserve term off)."
            )


@dataclass
class EditResult:
    """Weight deltas of an edit and the weights they replaced (for an exact undo).

    Keys are parameter names inside one pipeline component (``component``: ``unet`` for
    LocoEdit, ``text_encoder`` for Diff-QuickFix), e.g. ``up_blocks.1….attn2.to_k.weight``;
    ``undo``/``redo`` take that component.
    """

    deltas: dict[str, Tensor]
    originals: dict[str, Tensor] = field(repr=False)
    metadata: dict = field(default_factory=dict)
    component: str = "unet"

    @torch.no_grad()
    def undo(self, unet: nn.Module) -> None:
        """Restore the original weights bit for bit."""
        params = dict(unet.named_parameters())
        for name, weight in self.originals.items():
            params[name].copy_(weight)

    @torch.no_grad()
    def redo(self, unet: nn.Module) -> None:
        """Apply the deltas again on top of the original weights."""
        params = dict(unet.named_parameters())
        for name, delta in self.deltas.items():
            params[name].copy_((self.originals[name].float() + delta.float()).to(delta.dtype))

    def save(self, path: str | Path) -> Path:
        """Write the deltas as safetensors (with the edit's metadata), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.deltas.items()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            meta = {"loco_edit": json.dumps(self.metadata), "component": self.component}
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def read_delta(path: str | Path) -> tuple[dict[str, Tensor], dict, str]:
    """(deltas, metadata, component) of a saved edit."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return (
        load_file(str(path)),
        json.loads(meta.get("loco_edit", "{}")),
        meta.get("component", "unet"),
    )


@torch.no_grad()
def load_delta(root: nn.Module, path: str | Path) -> EditResult:
    """Add a saved delta to ``root``'s weights (the component it was made for); the returned
    result undoes it."""
    deltas, metadata, component = read_delta(path)
    params = dict(root.named_parameters())
    missing = [k for k in deltas if k not in params]
    if missing:
        raise KeyError(
            f"{path} edits {missing[:3]} of the {component}, which this module does not have; "
            "load it into the model (and component) it was made for."
        )
    originals = {k: params[k].detach().clone() for k in deltas}
    result = EditResult(deltas, originals, metadata, component)
    result.redo(root)
    return result


def site_inputs(unet: nn.Module, site: CrossAttnSite, context: Tensor) -> Tensor:
    """What a site's key/value projections read for a UNet context: (N, T, d)."""
    attn = unet.get_submodule(site.path)
    ctx = unet.process_encoder_hidden_states(context, {})
    return attn.norm_encoder_hidden_states(ctx) if attn.norm_cross else ctx


@torch.no_grad()
def apply_locoedit(
    model: LocoModel, requests: list[EditRequest], params: LocoEditParams
) -> EditResult:
    """Edit the key/value projections of ``params.sites`` in place (see ``edit_factor``).

    Sites whose projections read the same inputs (no per-site ``norm_cross``) share one solve.
    """
    if not requests:
        raise ValueError("No edit requests: give at least one {concept, target}.")
    unet, tok = model.unet, model.pipeline.tokenizer
    all_sites = sites(unet)
    check_sites(all_sites, params.sites, "LocoEdit")
    triples = [t for r in requests for t in r.pairs()]
    n = len(triples)
    # one text-encoder call for concept, target and preserve prompts (padding is to max length)
    empty = [""] if params.keep_empty else []  # the sampler's unconditional row
    context = model.encode(
        [s for s, _, _ in triples] + [t for _, _, t in triples] + list(params.preserve) + empty
    ).context
    n_preserve = len(params.preserve)
    pos = key_positions(tok, triples, params.key_tokens)
    rows = torch.tensor([i for i, p in enumerate(pos) for _ in p], device=context.device)
    src_at = torch.tensor([a for p in pos for a, _ in p], device=context.device)
    tgt_at = torch.tensor([b for p in pos for _, b in p], device=context.device)

    factors: dict[tuple, Tensor] = {}
    inputs: dict[object, tuple] = {}
    deltas, originals = {}, {}
    for index in params.sites:
        site = all_sites[index]
        attn = unet.get_submodule(site.path)
        where = "shared" if attn.norm_cross is None else index  # shared: same inputs everywhere
        if where not in inputs:
            ctx = site_inputs(unet, site, context)
            kept = ctx[2 * n : 2 * n + n_preserve].flatten(0, 1) if n_preserve else None
            exact = ctx[2 * n + n_preserve :].flatten(0, 1) if empty else None
            inputs[where] = (ctx[rows, src_at], ctx[n + rows, tgt_at], kept, exact)  # (k, d)
        x, y, p, e = inputs[where]
        for proj, lam, on in (
            (site.key_name, params.lambda_k, params.edit_k),
            (site.value_name, params.lambda_v, params.edit_v),
        ):
            if not on:
                continue
            key = (where, lam)
            if key not in factors:
                dtype = getattr(torch, params.solve_dtype)
                factors[key] = edit_factor(x, y, lam, p, params.preserve_scale, dtype, e)
            weight = getattr(attn, proj).weight
            name = f"{site.path}.{proj}.weight"
            originals[name] = weight.detach().clone()
            new = edited_weight(weight, factors[key])
            exact = factors[key].dtype
            deltas[name] = (new.to(exact) - weight.to(exact)).to(weight.dtype)
            weight.copy_(new)
    metadata = {
        "family": model.family.name,
        "params": asdict(params),
        "requests": [asdict(r) for r in requests],
        "site_paths": [all_sites[i].path for i in params.sites],
    }
    return EditResult(deltas, originals, metadata)


def export_pipeline(model: LocoModel, folder: str | Path) -> Path:
    """Save the (edited) pipeline as an ordinary diffusers folder, replacing ``folder`` atomically.

    The folder loads without loco-lightning: ``DiffusionPipeline.from_pretrained`` for the SD
    families, ``UNet2DConditionModel.from_pretrained(folder, subfolder="unet")`` for the world.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    old = folder.with_name(f".{folder.name}.old")
    try:
        model.pipeline.save_pretrained(tmp, safe_serialization=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return folder
