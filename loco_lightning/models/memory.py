"""How many generations fit in memory at once: measured on the model, the same way on CPU and GPU.

Allocator statistics exist only on CUDA, so the working memory of a call is measured here by
following every tensor the call's operations create until it is freed (a dispatch mode); the
peak of those live bytes is what the batch adds on top of the weights.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of the storages that operations create while they are alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.storages: dict[int, list[int]] = {}  # data pointer -> [bytes, tensors alive]

    def _release(self, ptr: int) -> None:
        entry = self.storages[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self.storages[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # a view or an in-place result shares its input's storage: new memory only if the
        # input was itself made here (a weight's transpose in every linear layer is not)
        given = {_pointer(t) for t in tree_flatten((args, kwargs))[0]}
        for t in tree_flatten(out)[0]:
            ptr = _pointer(t)
            if not ptr:
                continue
            entry = self.storages.get(ptr)
            if entry is None and ptr in given:
                continue
            if entry is None:
                entry = self.storages[ptr] = [t.untyped_storage().nbytes(), 0]
                self.live += entry[0]
                self.peak = max(self.peak, self.live)
            entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def _pointer(t) -> int:
    """The data pointer of a tensor's storage (0: not a tensor, or one without memory)."""
    if not isinstance(t, torch.Tensor) or t.device.type == "meta":
        return 0
    return t.untyped_storage().data_ptr()


def peak_bytes(fn: Callable[[], object]) -> int:
    """The most bytes that tensors created by ``fn`` held at one time."""
    with torch.no_grad(), _LiveBytes() as counter:
        fn()
    return counter.peak


def available_bytes(device: torch.device) -> int:
    """Free memory of the device (CUDA), or the memory the system can still give (CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def fit_batch(per_batch: Callable[[int], int], budget: int, most: int) -> int:
    """The largest batch (at most ``most``) whose working memory fits ``budget``, from the
    working memory of batches of 1 and 2 (fixed part plus a per-row part)."""
    one, two = per_batch(1), per_batch(2)
    per_row = max(two - one, 1)
    fixed = max(one - per_row, 0)
    return max(1, min(most, (budget - fixed) // per_row))
