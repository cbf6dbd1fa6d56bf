"""Sweep items: (prompt pair, seed, window) for every window size, as a Lightning DataModule."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, IterableDataset

from loco_lightning.data.prompts import PromptPair, load_pairs
from loco_lightning.localization.windows import windows
from loco_lightning.models.memory import available_bytes, fit_batch, peak_bytes
from loco_lightning.models.sampling import NoiseMode, noise_seed


@dataclass(frozen=True)
class SweepItem:
    """One generation of a sweep: ``window`` sites get ``pair.target``, the rest ``pair.original``.

    ``m`` is 0 for the empty window (the original image) and ``n_sites`` for the all-sites
    reference (the target prompt's image). ``noise_seed`` draws the starting noise; every window
    of one (pair, seed) shares it, so windows differ only by the intervention.
    """

    pair: PromptPair
    seed: int
    m: int
    window: tuple[int, ...]
    pair_index: int = 0
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if self.noise_seed is None:
            object.__setattr__(self, "noise_seed", self.seed)

    @property
    def start(self) -> int:
        return self.window[0] if self.window else 0

    @property
    def key(self) -> str:
        """Unique within a sweep: which pair, seed and window."""
        return f"{self.pair_index}:{self.seed}:{self.m}:{self.start}"

    @property
    def cell(self) -> tuple[int, int]:
        """The (pair index, seed) this item shares its prompts and noise with."""
        return (self.pair_index, self.seed)

    @property
    def label(self) -> str:
        if not self.window:
            return "none"
        return f"{self.window[0]}-{self.window[-1]}"


def sweep_items(
    pairs: list[PromptPair],
    n_sites: int,
    window_sizes: list[int],
    seeds: list[int],
    noise: NoiseMode = "per_prompt",
) -> list[SweepItem]:
    """All items of a sweep, references first: the empty and the all-sites window of each pair."""
    if not pairs:
        raise ValueError("Empty prompt list: a sweep needs at least one (original, target) pair.")
    check_list("data.window_sizes", window_sizes, 1, n_sites)
    check_list("data.seeds", seeds, 0, None)
    items = []
    for i, pair in enumerate(pairs):
        for seed in seeds:
            ns = noise_seed(seed, i, noise)
            items.append(SweepItem(pair, seed, 0, (), i, ns))
            items.append(SweepItem(pair, seed, n_sites, tuple(range(n_sites)), i, ns))
            for m in window_sizes:
                items += [SweepItem(pair, seed, m, w, i, ns) for w in windows(n_sites, m)]
    return items


def check_list(name: str, values: list[int], low: int, high: int | None) -> None:
    """A non-empty list of distinct integers in ``low..high`` (a repeat would generate and count
    the same images twice; an empty list would select from nothing)."""
    if not values:
        raise ValueError(f"{name} is empty; give at least one value, e.g. [{low}].")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name}={values} repeats {repeated}; list each once.")
    bad = [v for v in values if v < low or (high is not None and v > high)]
    if bad:
        upper = "" if high is None else f"..{high}"
        raise ValueError(f"{name}={values}: {bad} outside {low}{upper}.")


class WindowSweepData(L.LightningDataModule):
    """Yields batches of :class:`SweepItem`; the site count comes from the model being run.

    Items the run already finished (``done_keys()`` of the module, for resumed sweeps) are skipped.
    Under DDP, Lightning's distributed sampler shards the items across ranks.

    Args:
        pairs: prompt pairs, or the path of a YAML prompt set (see ``datasets/``).
        window_sizes: the window sizes m to sweep.
        seeds: starting-noise seeds; every pair is generated with each.
        batch_size: items per UNet batch (each item is one image; guidance doubles the UNet batch),
            or ``auto``: as many as fit in half the free memory, measured on the model.
        noise: ``per_prompt`` (each pair and seed its own starting noise) or ``shared`` (every
            pair starts from seed s's noise, as the reference scripts do). Shared noise biases whole
            seeds: on an earlier world-sd1-planted, seed 1's noise kept "striped" under the
            all-sites reference in 11 of 12 prompts, so seeds disagreed by 18 CLIP points.
    """

    def __init__(
        self,
        pairs: list[PromptPair] | str,
        window_sizes: list[int] = [1],  # noqa: B006 (jsonargparse needs a literal default)
        seeds: list[int] = [0],  # noqa: B006
        batch_size: int | Literal["auto"] = 16,
        noise: NoiseMode = "per_prompt",
    ) -> None:
        super().__init__()
        self.pairs = load_pairs(pairs) if isinstance(pairs, str) else pairs
        if not self.pairs:
            raise ValueError("data.pairs is empty: a sweep needs at least one (original, target).")
        check_list("data.window_sizes", window_sizes, 1, None)
        check_list("data.seeds", seeds, 0, None)
        if batch_size != "auto" and batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: give at least 1, or auto.")
        self.window_sizes = window_sizes
        self.seeds = seeds
        self.batch_size = batch_size
        self.noise = noise

    def fingerprint(self) -> dict:
        """What decides the sweep's rows (a resumed run must match it)."""
        return {
            "pairs": [[p.original, p.target, p.expect] for p in self.pairs],
            "seeds": list(self.seeds),
            "window_sizes": list(self.window_sizes),
            "noise": self.noise,
        }

    def items(self) -> list[SweepItem]:
        n_sites = self.trainer.lightning_module.n_sites
        return sweep_items(self.pairs, n_sites, self.window_sizes, self.seeds, self.noise)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # items are strings and ints; the module makes its tensors on the device

    def batch(self, items: list[SweepItem]) -> int:
        """``batch_size``, or with ``auto`` the largest batch whose measured working memory (a
        one-step generation of 1 and of 2 items) fits half of what the device has free."""
        if self.batch_size != "auto":
            return self.batch_size
        module = self.trainer.lightning_module
        probe = [it for it in items if it.window] or items
        size = fit_batch(
            lambda k: peak_bytes(lambda: module.generate(probe[:k], steps=1)),
            available_bytes(module.device) // 2,
            len(items),
        )
        rank_zero_info(f"data.batch_size auto: {size} items per batch")
        return size

    def predict_dataloader(self) -> DataLoader:
        items = self.items()
        return DataLoader(items, batch_size=self.batch(items), shuffle=False, collate_fn=list)

    def val_dataloader(self) -> DataLoader:
        module, items = self.trainer.lightning_module, self.items()
        if getattr(module, "search", None) is None:
            return pending(module, items, self.batch(items))
        trainer = self.trainer
        rounds = Rounds(module, items, self.batch(items), trainer.global_rank, trainer.world_size)
        return DataLoader(rounds, batch_size=None)


class Rounds(IterableDataset):
    """Batches of an adaptive search: each round is planned (``module.next_items``) from the rows
    of the rounds before, so the next round starts only once this one is on disk.

    A rank that has generated its share of a round yields empty batches until every rank's rows
    of it are written (Lightning fetches a batch ahead of the step it runs, so one empty batch
    lets the round's last step finish before the next round is planned). Rank r takes the items
    at places r, r + world_size, … of the sweep.
    """

    def __init__(self, module, items: list, batch_size: int, rank: int, world_size: int) -> None:
        self.module, self.items, self.batch_size = module, items, batch_size
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        todo = self.module.next_items(self.items)
        if not todo:
            yield from pending(self.module, self.items, self.batch_size)
            return
        where = {it.key: i for i, it in enumerate(self.items)}
        while todo:
            # by place in the sweep, not in the round: a rank that plans a round later than
            # another sees fewer items left, but the same share of them
            mine = [it for it in todo if where[it.key] % self.world_size == self.rank]
            for i in range(0, len(mine), self.batch_size):
                yield mine[i : i + self.batch_size]
            keys = {it.key for it in todo}
            yield []
            while not keys <= self.module.done_keys():
                time.sleep(0.2)  # another rank is still generating its share
                yield []
            todo = self.module.next_items(self.items)


@dataclass(frozen=True)
class TraceItem:
    """One causal trace: a prompt pair (the concept is what ``original`` has and ``target`` lacks)
    and a seed."""

    pair: PromptPair
    seed: int
    pair_index: int = 0

    @property
    def key(self) -> str:
        return f"{self.pair_index}:{self.seed}"


class TraceData(L.LightningDataModule):
    """Yields :class:`TraceItem` s not yet traced (``done_keys()`` of the module).

    Args:
        pairs: prompt pairs, or the path of a YAML prompt set.
        seeds: starting-noise seeds.
        batch_size: items per step (each item is a whole trace, batched internally by layer).
    """

    def __init__(
        self,
        pairs: list[PromptPair] | str,
        seeds: list[int] = [0],  # noqa: B006
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        self.pairs = load_pairs(pairs) if isinstance(pairs, str) else pairs
        if not self.pairs:
            raise ValueError("data.pairs is empty: causal tracing needs at least one prompt pair.")
        check_list("data.seeds", seeds, 0, None)
        self.seeds = seeds
        self.batch_size = batch_size

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch

    def fingerprint(self) -> dict:
        """What decides the traced rows (a resumed run must match it)."""
        return {
            "pairs": [[p.original, p.target, p.expect] for p in self.pairs],
            "seeds": list(self.seeds),
        }

    def val_dataloader(self) -> DataLoader:
        items = [TraceItem(p, s, i) for i, p in enumerate(self.pairs) for s in self.seeds]
        return pending(self.trainer.lightning_module, items, self.batch_size)


def pending(module, items: list, batch_size: int) -> DataLoader:
    """The items a sweep has not finished (``module.done_keys()``), in batches.

    When none remain, one empty batch: the epoch still ends, so a rerun of a finished sweep says
    so, rebuilds its table, selection and figures from the stored rows (a run killed before its
    report was written) and prints its summary, instead of skipping validation in silence.
    """
    done = module.done_keys()
    todo = [it for it in items if it.key not in done]
    if todo:
        return DataLoader(todo, batch_size=batch_size, shuffle=False, collate_fn=list)
    rank_zero_info(
        f"{module.hparams.output_dir}: all {len(items)} items are done already; the report is "
        "rebuilt from the stored rows (set a new output_dir to run again)."
    )
    return DataLoader([None], batch_size=1, collate_fn=_empty_batch)


def _empty_batch(_) -> list:
    return []
