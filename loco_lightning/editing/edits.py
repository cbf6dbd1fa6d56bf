"""The one edit contract: what every editor returns, whatever it changes.

An :class:`Edit` is computed without touching the model (ROME's execute) and then applied,
undone, saved and loaded the same way everywhere: the evaluation harness, the report, the
export. Two kinds exist: weight deltas on one pipeline component (every closed form, trained
baselines, zeroed neurons) and executor interventions (neurons replaced by a mean).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from loco_lightning.editing.streams import first_step_streams
from loco_lightning.files import atomic_path
from loco_lightning.hooks import NeuronAblation, intervene, site_inputs, sites
from loco_lightning.models import LocoModel


class Edit(ABC):
    """A change to a model that can be applied, undone bit for bit, and saved."""

    metadata: dict
    in_weights: ClassVar[bool]  # the edited model is an ordinary pipeline (it can be exported)

    @abstractmethod
    def apply(self, model: LocoModel) -> None:
        """Make the change; refused if it is already applied."""

    @abstractmethod
    def undo(self, model: LocoModel) -> None:
        """Restore exactly what ``apply`` found (nothing if it is not applied)."""

    @abstractmethod
    def tensors(self) -> dict[str, Tensor]:
        """What :meth:`save` writes besides the metadata."""

    def fingerprint(self, model: LocoModel) -> str | None:
        """A digest of what this edit changes, as the model has it now (None: nothing to
        compare, as for interventions)."""
        return None

    @contextmanager
    def applied(self, model: LocoModel) -> Iterator[None]:
        """The model with this edit inside the block, without it after (also on error)."""
        self.apply(model)
        try:
            yield
        finally:
            self.undo(model)

    def save(self, path: str | Path) -> Path:
        """Write the edit as safetensors (metadata in the header), atomically."""
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors().items()}
        header = {"loco_edit": json.dumps(self.metadata), **self.header()}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=header)
        return Path(path)

    @abstractmethod
    def header(self) -> dict[str, str]:
        """What :func:`load_edit` needs to rebuild this edit from its file."""

    @torch.no_grad()
    def empty_drift(self, model: LocoModel) -> float:
        """The largest relative change ‖K' − K‖ / ‖K‖ of the empty prompt's keys and values over
        every site: how far the unconditional branch that classifier-free guidance subtracts
        moves (0: kept)."""
        before = empty_kv(model)
        with self.applied(model):
            after = empty_kv(model)
        return max(float((a - b).norm() / b.norm()) for a, b in zip(after, before))


@dataclass
class WeightEdit(Edit):
    """Deltas added to parameters of one pipeline component (``unet``, ``text_encoder``, …).

    Keys are parameter names inside that component. ``apply`` keeps the weights it replaces, so
    ``undo`` restores them bit for bit (original + delta − delta would not be exact).
    """

    deltas: dict[str, Tensor]
    metadata: dict = field(default_factory=dict)
    component: str = "unet"
    in_weights: ClassVar[bool] = True
    _originals: dict[str, Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name, delta in self.deltas.items():  # once, not at every apply
            if not torch.isfinite(delta).all():
                raise ValueError(f"The delta of {name} is not finite; remake the edit.")

    def parameters(self, model: LocoModel) -> dict[str, torch.nn.Parameter]:
        """The parameters this edit changes, checked before any of them moves: present and of
        the delta's shape."""
        params = dict(model.component(self.component).named_parameters())
        missing = [k for k in self.deltas if k not in params]
        if missing:
            raise KeyError(
                f"This edit changes {missing[:3]} of the {self.component}, which the model "
                "does not have; apply it to the model (and component) it was made for."
            )
        for name, delta in self.deltas.items():
            if delta.shape != params[name].shape:
                raise ValueError(
                    f"The delta of {name} is {tuple(delta.shape)} but the weight is "
                    f"{tuple(params[name].shape)}; apply it to the model it was made for."
                )
        return params

    def fingerprint(self, model: LocoModel) -> str:
        """A digest of the weights this edit changes, as the model has them now."""
        params = self.parameters(model)
        return digest(params[k] for k in sorted(self.deltas))

    @torch.no_grad()
    def apply(self, model: LocoModel) -> None:
        if self._originals is not None:
            raise RuntimeError("This edit is already applied; undo it before applying it again.")
        params = self.parameters(model)
        made_for = self.metadata.get("made_for")
        now = None if made_for is None else digest(params[k] for k in sorted(self.deltas))
        if now != made_for:
            raise ValueError(
                f"This edit was made for other weights (digest {made_for}, the model's are "
                f"{now}): it is applied already, or the model is another one; apply it once, "
                "to the model it was made for."
            )
        self._originals = {k: params[k].detach().clone() for k in self.deltas}
        for name, delta in self.deltas.items():
            w = params[name]
            w.copy_((w.float() + delta.to(w.device).float()).to(w.dtype))

    @torch.no_grad()
    def undo(self, model: LocoModel) -> None:
        if self._originals is None:
            return
        params = self.parameters(model)
        for name, weight in self._originals.items():
            params[name].copy_(weight)
        self._originals = None

    def tensors(self) -> dict[str, Tensor]:
        return self.deltas

    def header(self) -> dict[str, str]:
        return {"kind": "weights", "component": self.component}


SPECS = {"NeuronAblation": NeuronAblation}  # interventions an activation edit may hold


@dataclass
class ActivationEdit(Edit):
    """Executor interventions (e.g. neurons replaced by their concept-free mean): ``apply``
    installs them on the UNet, laid out as the model samples (CFG halves or not)."""

    specs: list
    metadata: dict = field(default_factory=dict)
    in_weights: ClassVar[bool] = False
    _stack: ExitStack | None = field(default=None, repr=False)

    def apply(self, model: LocoModel) -> None:
        if self._stack is not None:
            raise RuntimeError("This edit is already applied; undo it before applying it again.")
        self._stack = ExitStack()
        self._stack.enter_context(intervene(model.denoiser, self.specs, cfg=model.cfg))

    def undo(self, model: LocoModel) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def tensors(self) -> dict[str, Tensor]:
        return {}

    def empty_drift(self, model: LocoModel) -> float:
        """0 when no intervention touches the unconditional half (they act on the conditional
        samples unless ``uncond``); not measured (NaN) otherwise."""
        return math.nan if any(s.uncond for s in self.specs) else 0.0

    def header(self) -> dict[str, str]:
        specs = [{"type": type(s).__name__, **asdict(s)} for s in self.specs]
        return {"kind": "activations", "specs": json.dumps(specs)}


@torch.no_grad()
def digest(tensors: Iterable[Tensor], samples: int = 65536) -> str:
    """A short digest of tensors' shapes and values (an odd stride through each, so every row of
    a matrix is sampled): cheap even for SD-XL's projections, and changed by any edit of them."""
    h = hashlib.sha1()
    for t in tensors:
        flat = t.detach().reshape(-1)
        stride = max(1, flat.numel() // samples) | 1
        h.update(str(tuple(t.shape)).encode())
        h.update(flat[::stride].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def empty_kv(model: LocoModel) -> list[Tensor]:
    """The empty prompt's keys and values at every site, in float64: [K_0, V_0, K_1, …]
    (joint attention: of its text stream at the first denoising step from seed 0's noise)."""
    unet = model.denoiser
    empty = model.empty()
    found = sites(unet)
    joint = first_step_streams(model, empty) if found[0].kind == "joint" else None
    out = []
    for site in found:
        attn = unet.get_submodule(site.path)
        x = joint[site.index][0] if joint else site_inputs(unet, site, empty.context)[0]
        out += [getattr(attn, site.projection(p))(x).double() for p in ("k", "v")]
    return out


def load_edit(path: str | Path) -> Edit:
    """An edit saved by :meth:`Edit.save` (or by an earlier version: weight deltas)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give the .safetensors an edit run wrote.")
    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
    metadata = json.loads(header.get("loco_edit", "{}"))
    if header.get("kind") == "activations":
        specs = []
        for raw in json.loads(header["specs"]):
            cls = SPECS[raw.pop("type")]
            specs.append(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}))
        return ActivationEdit(specs, metadata)
    return WeightEdit(load_file(str(path)), metadata, header.get("component", "unet"))
