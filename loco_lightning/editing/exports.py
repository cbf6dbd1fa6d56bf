"""What an edit run hands to a diffusers user: the edited pipeline folder, the edit as an exact
LoRA, each with a model card that says what was changed, on which base, and how it scored.

Both load with one line and without loco-lightning::

    pipe = DiffusionPipeline.from_pretrained("<run>/edited")
    pipe = DiffusionPipeline.from_pretrained(base); pipe.load_lora_weights("<run>/lora")
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file
from torch import Tensor

from loco_lightning.editing.edits import Edit, WeightEdit
from loco_lightning.files import atomic_path, temporary_prefix, usual_mode
from loco_lightning.models import LocoModel
from loco_lightning.models.pipeline import RECORD_NAME

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name load_lora_weights looks for


def replace_folder(folder: str | Path, marker: str, fill: Callable[[Path], None]) -> Path:
    """``fill`` a temporary folder beside ``folder``, then swap it in: a reader sees the old
    export or the new one, and a failed ``fill`` leaves the old one.

    Raises:
        FileExistsError: ``folder`` exists but holds no ``marker`` (it is not an earlier export
            and may be someone's data, so it is never replaced).
    """
    folder = Path(folder)
    if folder.exists() and not (folder / marker).is_file():
        kind = f"a folder without {marker}" if folder.is_dir() else "a file"
        raise FileExistsError(
            f"Export target {folder} exists and is {kind}, not an earlier export; it is left "
            "alone: move it, or export elsewhere (output_dir)."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    for leftover in folder.parent.glob(f"{temporary_prefix(folder)}*"):  # a killed export's
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=temporary_prefix(folder)))
    tmp.chmod(usual_mode(folder=True))
    old = folder.with_name(f"{temporary_prefix(folder)}old")
    try:
        fill(tmp)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return folder


def export_pipeline(
    model: LocoModel, folder: str | Path, card: str | None = None, base: str | None = None
) -> Path:
    """Save the (edited) pipeline as an ordinary diffusers folder, replacing ``folder`` atomically.

    ``_name_or_path`` in its configs names ``base`` (the source as the user gave it; a local
    folder relative to the export) instead of an absolute path of this machine; a world's
    ``loco_world.json`` (its readers and scorer) goes along, and ``card`` becomes ``README.md``.
    """
    folder = Path(folder)
    name = relative_source(base, folder) if base else "."

    def fill(tmp: Path) -> None:
        model.pipeline.save_pretrained(tmp, safe_serialization=True)
        for config in [tmp / "model_index.json", *tmp.glob("*/config.json")]:
            data = json.loads(config.read_text())
            if "_name_or_path" in data:
                part = config.parent.name if config.parent != tmp else ""
                data["_name_or_path"] = f"{name}/{part}".rstrip("/") if part else name
                config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        if model.world is not None:
            shutil.copyfile(Path(model.world["folder"]) / RECORD_NAME, tmp / RECORD_NAME)
        if card is not None:
            (tmp / "README.md").write_text(card)

    return replace_folder(folder, "model_index.json", fill)


def relative_source(source: str, folder: Path) -> str:
    """A hub id or packaged name as it is; a local folder relative to ``folder``."""
    local = Path(source).expanduser()
    if not local.exists():
        return source
    return os.path.relpath(local.resolve(), folder.resolve().parent / folder.name)


def lora_factors(delta: Tensor, rtol: float = 1e-7) -> tuple[Tensor, Tensor]:
    """``B @ A == delta`` at the rank the delta has (a closed-form update of k key rows has rank
    at most k, so its LoRA is exact and small).

    The SVD is taken in float64; singular values below ``rtol`` times the largest are the
    delta's own rounding and are dropped.

    Returns:
        ``A`` (rank, in) and ``B`` (out, rank), in the delta's dtype (rank >= 1).
    """
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    rank = max(1, int((s > s[0] * rtol).sum()))
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(delta.dtype), (u[:, :rank] * root).to(delta.dtype)


def lora_state_dict(edit: WeightEdit) -> dict[str, Tensor]:
    """The edit in the PEFT layout diffusers loads: ``<component>.<module>.lora_A/B.weight``,
    and a bias delta as ``lora_B.bias`` (PEFT's ``lora_bias``).

    Raises:
        ValueError: a delta that is not a linear layer's weight (a LoRA has no place for it).
    """
    parts = {name: name.rpartition(".") for name in edit.deltas}
    weights = {m: edit.deltas[n] for n, (m, _, k) in parts.items() if k == "weight"}
    biases = {m: edit.deltas[n] for n, (m, _, k) in parts.items() if k == "bias" and m in weights}
    for name, delta in edit.deltas.items():
        module, _, kind = parts[name]
        if not (weights.get(module) is delta and delta.dim() == 2 or biases.get(module) is delta):
            raise ValueError(
                f"{name} {tuple(delta.shape)} is not a linear layer's weight (or the bias beside "
                "one), so no LoRA holds it; load the exported pipeline folder instead."
            )
    out = {}
    for module, delta in sorted(weights.items()):
        prefix = f"{edit.component}.{module}"
        a, b = lora_factors(delta)
        out[f"{prefix}.lora_A.weight"] = a.contiguous()
        out[f"{prefix}.lora_B.weight"] = b.contiguous()
        if module in biases:
            out[f"{prefix}.lora_B.bias"] = biases[module].contiguous()
    return out


def export_lora(edit: WeightEdit, folder: str | Path, card: str | None = None) -> Path:
    """The edit as an exact LoRA folder (``pipe.load_lora_weights(folder)``), replaced
    atomically; ``card`` becomes its ``README.md``."""
    tensors = {k: v.detach().float().cpu() for k, v in lora_state_dict(edit).items()}

    def fill(tmp: Path) -> None:
        with atomic_path(tmp / LORA_FILE) as path:
            save_file(tensors, path, metadata={"format": "pt"})
        if card is not None:
            (tmp / "README.md").write_text(card)

    return replace_folder(folder, LORA_FILE, fill)


def model_card(
    base: dict,
    method: str,
    edit: Edit,
    metrics: list[dict],
    command: str,
    lora: bool = False,
) -> str:
    """``README.md`` of an export: YAML front matter (base model and its digest, editor and its
    parameters, the changed modules, the requests, the evaluation rows, the command) and how to
    load it."""
    meta = {k: v for k, v in edit.metadata.items() if k not in ("requests", "made_for")}
    changed = sorted({n.rpartition(".")[0] for n in getattr(edit, "deltas", {})})
    front = {
        "library_name": "diffusers",
        "base_model": base["source"],
        "tags": ["loco-lightning", "model-editing", str(meta.get("editor", method))],
        "loco": {
            "method": method,
            "base": {k: base[k] for k in ("source", "family", "dtype", "weights") if k in base},
            "editor": meta,
            "component": getattr(edit, "component", None),
            "changed_modules": changed,
            "requests": edit.metadata.get("requests", []),
            "metrics": [row for row in metrics if row.get("method") in (method, "unedited")],
            "command": command,
        },
    }
    load = (
        f'pipe = DiffusionPipeline.from_pretrained("{base["source"]}")\n'
        'pipe.load_lora_weights("<this folder>")  # exact: the LoRA is the edit itself'
        if lora
        else 'pipe = DiffusionPipeline.from_pretrained("<this folder>")'
    )
    requests = "; ".join(
        f"{r['concept']!r} -> {r['target']!r}" for r in edit.metadata.get("requests", [])
    )
    return (
        "---\n"
        + yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
        + "---\n\n"
        + f"# {base['source']} edited with {meta.get('editor', method)}\n\n"
        + f"Edit requests: {requests or '(none recorded)'}. Changed: {len(changed)} modules of "
        f"the {getattr(edit, 'component', 'model')} (listed above), made with loco-lightning.\n\n"
        + f"```python\nfrom diffusers import DiffusionPipeline\n\n{load}\n```\n\n"
        + "The `metrics` rows above are the run's evaluation: `clip` is CLIP score (higher: the "
        "image matches its prompt more), `reader` the exact readers' agreement (world models), "
        "`fid` the distance to the unedited model's images (lower: closer).\n"
    )
