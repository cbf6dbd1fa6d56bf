"""Record and patch whole-module outputs: the seam causal tracing needs beyond attention.

ResNet blocks, feed-forwards and text-encoder layers have no processor seam, so these use
forward hooks; cross-attention contexts go through :func:`loco_lightning.hooks.intervene`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import Tensor, nn

from loco_lightning.hooks.processors import rows


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def record_outputs(root: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, list[Tensor]]]:
    """Record the output of each module (the first element of a tuple) on every call."""
    records: dict[str, list[Tensor]] = {p: [] for p in paths}
    handles = [
        root.get_submodule(p).register_forward_hook(
            lambda m, a, out, p=p: records[p].append(_first(out).detach())
        )
        for p in paths
    ]
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Patch:
    """Replace a module's output for some samples with recorded values, call by call.

    Attributes:
        samples: conditional samples to patch (rows as in the executor's ``cfg`` layout).
        values: one tensor per call, ``len(samples)`` rows each (e.g. a clean run's outputs).
        tokens: patch only these positions of dimension 1 (text-encoder tokens); None: all.
    """

    samples: tuple[int, ...]
    values: list[Tensor]
    tokens: tuple[int, ...] | None = None


@contextmanager
def patch_outputs(root: nn.Module, patches: dict[str, list[Patch]], cfg: bool) -> Iterator[None]:
    """Install :class:`Patch` es on modules of ``root`` (by path) for the ``with`` body."""
    calls = dict.fromkeys(patches, 0)

    def hook(path: str):
        def patch(module, args, output):
            out = _first(output).clone()
            k = calls[path]
            calls[path] += 1
            for p in patches[path]:
                if k >= len(p.values):
                    raise IndexError(
                        f"{path} was called {k + 1} times but the patch holds {len(p.values)} "
                        "recorded outputs; record and patch the same number of steps."
                    )
                index = rows(out.shape[0], p.samples, False, cfg)
                value = p.values[k].to(out.dtype)
                if p.tokens is None:
                    out[index] = value
                else:
                    t = list(p.tokens)
                    for i, r in enumerate(index):
                        out[r, t] = value[i, t]
            return (out, *output[1:]) if isinstance(output, tuple) else out

        return patch

    handles = [root.get_submodule(p).register_forward_hook(hook(p)) for p in patches]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
