"""Result files are replaced whole or not at all."""

from __future__ import annotations

import json

import pytest

from loco_lightning.files import atomic_path, clean_temporaries, write_json, write_table


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "selection.json", {"window": [3, 4]})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"window": [')  # killed half way
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"window": [3, 4]}
    assert [p.name for p in tmp_path.iterdir()] == ["selection.json"]


def test_a_result_gets_the_permissions_a_plain_write_would(tmp_path):
    (tmp_path / "plain.json").write_text("{}")
    write_json(tmp_path / "atomic.json", {})
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes["atomic.json"] == modes["plain.json"]


def test_a_table_is_written_as_csv_and_json_with_columns_in_order(tmp_path):
    table = [{"m": 1, "start": 0}, {"m": 2, "start": 1, "clip": 3.5}]
    write_table(table, tmp_path / "out", "windows")
    lines = (tmp_path / "out" / "windows.csv").read_text().splitlines()
    assert lines == ["m,start,clip", "1,0,", "2,1,3.5"]
    assert json.loads((tmp_path / "out" / "windows.json").read_text()) == table


def test_the_temporaries_of_a_killed_write_are_cleaned_by_the_next_run_and_nothing_else(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "windows.json") as tmp:
        tmp.write_text("[")
        stale = tmp.with_name(tmp.name + ".kept")
        tmp.rename(stale)  # as if killed: the cleanup of the block never saw it
        raise KeyboardInterrupt
    (tmp_path / ".edited.loco-tmp.abc").mkdir()  # a killed export's folder
    (tmp_path / ".hidden").write_text("the user's")
    (tmp_path / "windows.csv").write_text("m,start")
    assert clean_temporaries(tmp_path) == sorted([".edited.loco-tmp.abc", stale.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "windows.csv"]
