"""Racing over windows, planned from rows: known scores, resumes, bad settings."""

from __future__ import annotations

import random

import pytest

from loco_lightning.data.prompts import PromptPair
from loco_lightning.localization.data import sweep_items
from loco_lightning.localization.results import aggregate, select
from loco_lightning.localization.search import Racing, ordered_cells

PAIRS = [PromptPair(f"a striped thing {i}", f"a thing {i}") for i in range(6)]
N_SITES = 6
SIZES = [1, 2]


def items():
    return sweep_items(PAIRS, N_SITES, SIZES, [0, 1])


def truth(it, close: float = 5.0) -> float:
    """Known scores: windows containing site 3 remove the concept, ``close`` points more when
    they hold 2-3 too; every cell adds its own offset and a little noise."""
    rng = random.Random(it.key)
    base = 60.0 - 3.0 * it.pair_index + rng.uniform(-0.5, 0.5)
    if it.m == N_SITES:
        return base - 30
    if 3 in it.window:
        return base - 20 - (close if 2 in it.window else 0)
    return base


def run(search: Racing, score=truth, objective="remove") -> list[dict]:
    """Generate what the plan asks for, round by round, as the module does."""
    have: list[dict] = []
    while todo := search.plan(items(), have, "clip", objective):
        keys = {r["key"] for r in have}
        assert not keys & {it.key for it in todo}, "an item planned twice"
        have += [
            {"key": it.key, "m": it.m, "start": it.start, "window": it.label, "clip": score(it)}
            for it in todo
        ]
    return have


def test_cells_start_with_every_pair_of_the_first_seed():
    cells = ordered_cells(items())
    assert cells[:6] == [(p, 0) for p in range(6)] and cells[6:] == [(p, 1) for p in range(6)]


def test_racing_finds_the_exhaustive_selection_with_fewer_items_and_full_survivors():
    everything = run(Racing(first=1.0))
    assert sorted(r["key"] for r in everything) == sorted(it.key for it in items())
    exhaustive = select(aggregate(everything, ("clip",)), N_SITES, "remove", "clip", 0.2)
    rows = run(Racing(first=1 / 6, grow=2, drop=0.1))
    table = aggregate(rows, ("clip",))
    assert select(table, N_SITES, "remove", "clip", 0.2) == exhaustive
    assert exhaustive.window == (2, 3)
    # the references on all 12 cells, 11 windows on 2 (a sixth), then only each size's winner on
    # the rest: the windows without site 3 do nothing and leave after the first round
    assert len(rows) == 24 + 11 * 2 + 2 * 10
    full = {(r["m"], r["start"]) for r in table if r["n"] == 12}
    assert full == {(0, 0), (N_SITES, 0), (1, 3), (2, 2)}


def test_a_window_within_drop_of_the_best_stays_in_the_race():
    """[3, 4] is 2 points behind [2, 3], inside 0.1 of the 30-point gap: both run to the end."""
    rows = run(Racing(first=1 / 6, grow=2, drop=0.1), lambda it: truth(it, close=2.0))
    full = {(r["m"], r["start"]) for r in aggregate(rows, ("clip",)) if r["n"] == 12}
    assert {(2, 2), (2, 3)} <= full and (2, 1) not in full


def test_update_keeps_the_highest_scores():
    rows = run(Racing(first=1 / 6, grow=2), lambda it: -truth(it), "update")
    sel = select(aggregate(rows, ("clip",)), N_SITES, "update", "clip", 0.2)
    assert sel.best[1][0] == 3 and sel.best[2][0] == 2


def test_a_resumed_race_plans_only_what_is_missing():
    race = Racing(first=1 / 6, grow=2)
    rows = run(race)
    partial = rows[: len(rows) // 2]
    todo = race.plan(items(), partial, "clip", "remove")
    assert todo and {it.key for it in todo} <= {r["key"] for r in rows[len(rows) // 2 :]}


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"first": 0}, "first=0"),
        ({"first": 1.5}, "first=1.5"),
        ({"grow": 1}, "grow=1"),
        ({"drop": float("nan")}, "drop=nan"),
    ],
)
def test_bad_settings_are_refused(settings, says):
    with pytest.raises(ValueError, match=says):
        Racing(**settings)


def test_selection_ignores_windows_dropped_early():
    rows = [
        {"key": "a", "m": 0, "start": 0, "window": "none", "clip": 30.0},
        {"key": "b", "m": 0, "start": 0, "window": "none", "clip": 30.0},
        {"key": "c", "m": 2, "start": 0, "window": "0-1", "clip": 20.0},
        {"key": "d", "m": 2, "start": 0, "window": "0-1", "clip": 20.0},
        {"key": "e", "m": 1, "start": 0, "window": "0", "clip": 25.0},
        {"key": "f", "m": 1, "start": 0, "window": "0", "clip": 25.0},
        {"key": "g", "m": 1, "start": 1, "window": "1", "clip": 10.0},  # one cell only: dropped
    ]
    sel = select(aggregate(rows, ("clip",)), 2, "remove", "clip", 0.1)
    assert sel.best == {1: (0, 25.0)}
