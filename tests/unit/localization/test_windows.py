"""Window builders and sweep items."""

from __future__ import annotations

import pytest

from loco_lightning.data.prompts import PromptPair
from loco_lightning.localization.data import sweep_items
from loco_lightning.localization.windows import windows


def test_every_window_has_exactly_m_consecutive_sites():
    assert windows(7, 1) == [(i,) for i in range(7)]
    assert windows(7, 3) == [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 6)]
    assert windows(16, 16) == [tuple(range(16))]


@pytest.mark.parametrize("m", [0, 8])
def test_window_wider_than_the_site_count_is_refused(m):
    with pytest.raises(ValueError, match=f"m={m} does not fit a model with 7 .* choose m in 1..7"):
        windows(7, m)


def test_sweep_items_hold_references_and_every_window_per_pair_and_seed():
    pairs = [PromptPair("a red circle", "a circle"), PromptPair("a blue square", "a square")]
    items = sweep_items(pairs, n_sites=7, window_sizes=[1, 2], seeds=[0, 1])
    per = 2 + 7 + 6
    assert len(items) == 2 * 2 * per
    first = items[:per]
    assert first[0].window == () and first[0].label == "none"
    assert first[1].window == tuple(range(7)) and first[1].m == 7
    assert [it.label for it in first[2:4]] == ["0-0", "1-1"]
    assert len({(it.pair, it.seed, it.window) for it in items}) == len(items)


def test_empty_pair_list_is_refused():
    with pytest.raises(ValueError, match="Empty prompt list"):
        sweep_items([], 7, [1], [0])
