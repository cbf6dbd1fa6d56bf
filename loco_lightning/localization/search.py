"""Adaptive window search: racing over windows, planned from the rows made so far.

The plan is a pure function of the finished rows, so a killed search resumes where it stopped and
every DDP rank plans the same round. Windows that survive to the end are generated on every
(prompt pair, seed) cell, so their means, and the selection made from them, are exactly those of
the exhaustive sweep whenever the exhaustive sweep's best window of each size survives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loco_lightning.localization.data import SweepItem
from loco_lightning.localization.results import Objective

Cell = tuple[int, int]  # (pair index, seed)


@dataclass(frozen=True)
class Racing:
    """Racing over windows, separately for every window size m.

    Round 0 generates the references (the empty and the all-sites window) on every cell, then
    every window on the first ``first`` share of the cells (at least one; the pairs of the first
    seed first, so that they differ in prompt). After each round a window leaves the race when
    its mean over the round's cells is behind the best window of its size by more than ``drop``
    times the gap between the original and the reference, or has moved the score from the
    original's by no more than that (it does nothing: when no window of a size does anything,
    the size cannot be selected and leaves whole). The rest go on to ``grow`` times as many
    cells, until the survivors have been generated on every cell. The gap is measured on every
    cell, so the rule means the same for every scorer and concept.

    Attributes:
        first: share of the (pair, seed) cells of the first round.
        grow: the factor by which the cells grow each round.
        drop: how far behind the best, or how close to the original, a window may be and stay
            in, as a fraction of the gap.
    """

    first: float = 0.17
    grow: int = 3
    drop: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.first <= 1:
            raise ValueError(
                f"model.racing.first={self.first}: give the share of the (pair, seed) cells of "
                "the first round, in (0, 1] (0.17: a sixth)."
            )
        if self.grow < 2:
            raise ValueError(
                f"model.racing.grow={self.grow}: give an integer >= 2 (3 triples the cells each "
                "round)."
            )
        if not (math.isfinite(self.drop) and self.drop >= 0):
            raise ValueError(
                f"model.racing.drop={self.drop}: give a finite fraction >= 0 of the gap between "
                "the original and the all-sites reference (e.g. 0.1)."
            )

    def plan(
        self, items: list[SweepItem], rows: list[dict], score: str, objective: Objective
    ) -> list[SweepItem]:
        """The items of the current round not generated yet; empty once the race is over.

        ``items`` is the exhaustive sweep; ``rows`` the finished rows (their ``key`` and ``score``).
        """
        done = {r["key"]: r[score] for r in rows}
        cells = ordered_cells(items)
        n_sites = max(it.m for it in items)
        refs = [it for it in items if it.m in (0, n_sites)]
        todo = [it for it in refs if it.key not in done]
        if todo:
            return todo
        sign = 1.0 if objective == "remove" else -1.0
        original, reference = (
            sum(done[it.key] for it in refs if it.m == m) / len(cells) for m in (0, n_sites)
        )
        slack = self.drop * abs(original - reference)
        by_size: dict[int, dict[int, list[SweepItem]]] = {}  # m -> start -> items
        for it in items:
            if 0 < it.m < n_sites:
                by_size.setdefault(it.m, {}).setdefault(it.start, []).append(it)
        alive = {m: sorted(starts) for m, starts in by_size.items()}
        count = max(1, round(self.first * len(cells)))
        while True:
            now = set(cells[:count])
            racing = {
                m: {s: [it for it in by_size[m][s] if it.cell in now] for s in starts}
                for m, starts in alive.items()
            }
            todo = [
                it
                for runs in racing.values()
                for its in runs.values()
                for it in its
                if it.key not in done
            ]
            if todo or count == len(cells):
                return todo
            untouched = sign * sum(done[it.key] for it in refs if it.m == 0 and it.cell in now)
            untouched /= len(now)
            for m, runs in racing.items():
                if not runs:
                    continue
                means = {
                    s: sign * sum(done[it.key] for it in its) / len(its) for s, its in runs.items()
                }
                best = min(means.values())
                alive[m] = [
                    s
                    for s in sorted(runs)
                    if means[s] - best <= slack and untouched - means[s] > slack
                ]
            count = min(count * self.grow, len(cells))


def ordered_cells(items: list[SweepItem]) -> list[Cell]:
    """The sweep's (pair, seed) cells, every pair of the first seed first."""
    seeds = list(dict.fromkeys(it.seed for it in items))
    cells = {it.cell for it in items}
    return sorted(cells, key=lambda c: (seeds.index(c[1]), c[0]))
