"""Intervention specs: small frozen records that say *what* to change, never *how*.

Sweeps build lists of these; :func:`loco_lightning.hooks.executor.intervene` is the one place that
installs them. Site indices refer to :func:`loco_lightning.hooks.sites.sites` (execution order).
``samples`` index the conditional samples of a UNet batch (the second half under classifier-free
guidance); ``None`` means every conditional sample. The unconditional half is never touched unless
``uncond`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KV = Literal["k", "v", "kv"]
Recordable = Literal["context", "k", "v", "output", "contribution"]


@dataclass(frozen=True)
class PromptSwap:
    """These sites read ``prompt``'s text context instead of the sample's own.

    Attributes:
        sites: site indices that get the other prompt.
        prompt: the prompt whose context they read.
        samples: conditional samples it applies to (``None``: all).
        pooled: also swap the prompt's global path (SD-XL pooled ``text_embeds``; IF's text-time
            embedding), which K/V interventions otherwise leave alone.
        uncond: also apply to the unconditional half of a classifier-free-guidance batch.
    """

    sites: tuple[int, ...]
    prompt: str
    samples: tuple[int, ...] | None = None
    pooled: bool = False
    uncond: bool = False


@dataclass(frozen=True)
class NeuronAblation:
    """Set or scale output neurons of the text key/value projections at these sites.

    Attributes:
        sites: site indices.
        neurons: output channels of ``to_k``/``to_v`` (IF: ``add_k_proj``/``add_v_proj``).
        projection: which projection(s): ``k``, ``v`` or ``kv``.
        value: replacement value, one for all neurons or one per neuron (e.g. the concept-free
            mean); ignored when ``scale`` is given.
        scale: multiply the neurons' outputs by this instead of replacing them.
        samples: conditional samples it applies to (``None``: all).
        uncond: also apply to the unconditional half.
    """

    sites: tuple[int, ...]
    neurons: tuple[int, ...]
    projection: KV = "kv"
    value: float | tuple[float, ...] = 0.0
    scale: float | None = None
    samples: tuple[int, ...] | None = None
    uncond: bool = False

    def __post_init__(self) -> None:
        negative = [n for n in self.neurons if n < 0]
        if not self.neurons or negative:
            raise ValueError(
                f"NeuronAblation neurons={list(self.neurons)}: give output channel indices >= 0 "
                "(a negative index would wrap around to the last channels)."
            )


@dataclass(frozen=True)
class Record:
    """Keep activations of these sites on every call (detached, whole batch).

    ``context`` is the text context the site read (after swaps), ``k``/``v`` the text keys and
    values (after ablations, before the head split), ``output`` the attention module's output.
    ``contribution`` is, per conditional sample, the attention output its ``tokens`` carry:
    ``mean over image positions of ‖to_out[0](Σ_{j ∈ tokens} A[:, :, j] v_j)‖`` (heads merged), the
    block score of Zarei et al.'s DiT localizer; one (samples,) tensor per call.

    Attributes:
        tokens: for ``contribution``, the text positions of each conditional sample.
    """

    sites: tuple[int, ...]
    what: tuple[Recordable, ...] = ("k", "v")
    tokens: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if "contribution" in self.what and not (self.tokens and all(self.tokens)):
            raise ValueError(
                f"Record(what={list(self.what)}) needs tokens: the text positions whose "
                "contribution to measure, one non-empty tuple per conditional sample."
            )


Intervention = PromptSwap | NeuronAblation | Record
