"""Result rows, the window table and the paper's selection rule, on known numbers."""

from __future__ import annotations

import pytest

from loco_lightning.localization.results import (
    NoSignalError,
    ResultStore,
    aggregate,
    check_reference,
    select,
)


def table_of(scores: dict[tuple[int, int], float], n_sites: int = 4) -> list[dict]:
    rows = [
        {"key": f"{m}:{s}", "m": m, "start": s, "window": f"{s}", "clip": v}
        for (m, s), v in scores.items()
    ]
    return aggregate(rows, ("clip",))


SCORES = {
    (0, 0): 30.0,
    (4, 0): 20.0,
    (1, 0): 29.0,
    (1, 1): 25.0,
    (1, 2): 28.0,
    (1, 3): 29.5,
    (2, 0): 24.0,
    (2, 1): 20.5,
    (2, 2): 27.0,
}


def test_removal_picks_the_argmin_and_the_smallest_m_within_margin():
    sel = select(table_of(SCORES), 4, "remove", "clip", margin=0.1)
    assert sel.best == {1: (1, 25.0), 2: (1, 20.5)}
    assert (sel.original, sel.reference) == (30.0, 20.0)
    assert sel.smallest_m == 2 and sel.window == (1, 2)  # 20.5 - 20 <= 0.1 * 10; 25 is not


def test_update_picks_the_argmax_against_the_target():
    scores = {k: 50 - v for k, v in SCORES.items()}  # the fact's score rises where sites swap
    sel = select(table_of(scores), 4, "update", "clip", margin=0.1)
    assert sel.best == {1: (1, 25.0), 2: (1, 29.5)}
    assert sel.smallest_m == 2 and sel.window == (1, 2)


def test_no_window_within_margin_selects_none():
    sel = select(table_of(SCORES), 4, "remove", "clip", margin=0.01)
    assert sel.smallest_m is None and sel.window == ()


def test_aggregate_gives_mean_and_spread_over_prompts_and_seeds():
    rows = [
        {"key": str(i), "m": 1, "start": 0, "window": "0-0", "clip": v, "reader": None}
        for i, v in enumerate([1.0, 2.0, 3.0])
    ]
    [row] = aggregate(rows, ("clip", "reader"))
    assert row["n"] == 3 and row["clip_mean"] == 2.0 and row["clip_std"] == pytest.approx(1.0)
    assert "reader_mean" not in row


def test_store_dedupes_ranks_and_skips_a_torn_line(tmp_path):
    store = ResultStore(tmp_path, {"pairs": [["a", "b"]]})
    store.open()
    store.append([{"key": "k1", "v": 1}, {"key": "k2", "v": 2}], rank=0)
    store.append([{"key": "k2", "v": 2}], rank=1)  # a padded duplicate on another rank
    with open(tmp_path / "items.rank1.jsonl", "a") as f:
        f.write('{"key": "k3", "v"')  # killed mid-write
    assert sorted(r["key"] for r in store.rows()) == ["k1", "k2"]
    assert store.done() == {"k1", "k2"}


def test_store_refuses_a_folder_of_another_sweep(tmp_path):
    ResultStore(tmp_path, {"seeds": [0], "steps": 25}).open()
    with pytest.raises(ValueError, match=r"different sweep \(changed: \['seeds'\]\)"):
        ResultStore(tmp_path, {"seeds": [0, 1], "steps": 25}).open()


def reference_rows(shifts: dict[tuple[int, int], float], n_sites: int = 4) -> list[dict]:
    """Original score 30 and all-sites score 30 - shift, per (pair, seed)."""
    rows = []
    for (pair, seed), d in shifts.items():
        for m, v in ((0, 30.0), (n_sites, 30.0 - d)):
            rows.append({"pair": pair, "seed": seed, "m": m, "start": 0, "clip": v})
    return rows


def test_a_reference_that_moves_the_score_beyond_its_spread_passes():
    shifts = {(p, s): 5.0 + 0.1 * p + 0.2 * s for p in range(3) for s in range(2)}
    mean, spread = check_reference(reference_rows(shifts), 4, "remove", "clip")
    assert mean == pytest.approx(5.2) and 0 < spread < 1


def test_a_reference_that_raises_a_removed_concepts_score_is_refused():
    """Seen on a foreign model: the CLIP score rose when the style was removed everywhere."""
    shifts = {(p, s): -2.0 for p in range(3) for s in range(2)}
    with pytest.raises(NoSignalError, match=r"moved the clip score by \+2.000.*does not lower"):
        check_reference(reference_rows(shifts), 4, "remove", "clip")
    # the same rows pass for a fact update, whose target score must rise
    assert check_reference(reference_rows(shifts), 4, "update", "clip")[0] == pytest.approx(2.0)


def test_a_reference_within_its_spread_over_seeds_is_refused():
    shifts = {(0, 0): 3.0, (1, 0): 3.0, (0, 1): -2.0, (1, 1): -2.0}  # seeds disagree
    with pytest.raises(NoSignalError, match="spread .* over 2 seed"):
        check_reference(reference_rows(shifts), 4, "remove", "clip")
    one_seed = {(p, 0): 0.5 + (-1) ** p * 3.0 for p in range(4)}  # noisy over prompts
    with pytest.raises(NoSignalError, match="over 1 seed"):
        check_reference(reference_rows(one_seed), 4, "remove", "clip")


def test_a_row_torn_by_a_kill_is_cut_on_resume_and_its_item_recomputed(tmp_path):
    store = ResultStore(tmp_path, {"pairs": [["a", "b"]]})
    store.open()
    store.append([{"key": "1:0", "clip": 1.0}, {"key": "1:1", "clip": 2.0}], rank=0)
    shard = tmp_path / "items.rank0.jsonl"
    with open(shard, "a") as f:
        f.write('{"key": "1:2", "cl')  # killed mid-write
    resumed = ResultStore(tmp_path, {"pairs": [["a", "b"]]})
    resumed.open()
    assert resumed.done() == {"1:0", "1:1"}  # 1:2 is computed again
    resumed.append([{"key": "1:2", "clip": 3.0}], rank=0)
    assert [r["key"] for r in resumed.rows()] == ["1:0", "1:1", "1:2"]
    assert shard.read_text().count("\n") == 3
