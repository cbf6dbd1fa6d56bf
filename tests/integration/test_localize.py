"""LocoGen end to end on the SD-1 miniature: resume, DDP and the written outputs."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from loco_lightning.cli import main
from loco_lightning.localization.results import NoSignalError
from tests.helpers import miniature_job, two_process_job

PAIRS = json.dumps([{"original": "a house in the style of Van Gogh", "target": "a house"}])


def args(tmp_path, out: str, batch: int = 4) -> list[str]:
    return miniature_job(
        "localize",
        "configs/localize/sd1_style.yaml",
        tmp_path / out,
        tmp_path / "tb",
        "--model.require_signal",
        "false",  # random weights: the reference moves no score
        "--data.pairs",
        PAIRS,
        "--data.window_sizes",
        "[1, 2]",
        "--data.seeds",
        "[0]",
        "--data.batch_size",
        str(batch),
    )


def table(tmp_path, out: str) -> dict:
    rows = json.loads((tmp_path / out / "windows.json").read_text())
    return {(r["m"], r["start"]): round(r["clip_mean"], 4) for r in rows}


N_ITEMS = 2 + 16 + 15  # references, m=1, m=2 on 16 sites: odd, so DDP's sampler pads


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loc")
    main(args(tmp, "full"))
    return tmp


def test_sweep_writes_table_heatmap_and_grid(uninterrupted):
    out = uninterrupted / "full"
    for name in ("windows.csv", "windows.json", "heatmap_clip.png", "windows.png", "sweep.json"):
        assert (out / name).exists(), name
    assert len(table(uninterrupted, "full")) == N_ITEMS
    lines = (out / "items.rank0.jsonl").read_text().splitlines()
    assert len(lines) == N_ITEMS


def test_interrupted_sweep_resumes_to_the_same_table(uninterrupted, tmp_path):
    main([*args(tmp_path, "resumed"), "--trainer.limit_val_batches", "3"])
    assert len((tmp_path / "resumed" / "items.rank0.jsonl").read_text().splitlines()) == 12
    main(args(tmp_path, "resumed"))
    lines = (tmp_path / "resumed" / "items.rank0.jsonl").read_text().splitlines()
    assert len(lines) == N_ITEMS == len({json.loads(x)["key"] for x in lines})
    assert table(tmp_path, "resumed") == table(uninterrupted, "full")


def test_two_process_ddp_gives_the_same_table(uninterrupted, tmp_path):
    two_process_job(*args(tmp_path, "ddp"))
    shards = sorted(p.name for p in (tmp_path / "ddp").glob("items.rank*.jsonl"))
    assert shards == ["items.rank0.jsonl", "items.rank1.jsonl"]
    assert table(tmp_path, "ddp") == table(uninterrupted, "full")


def test_selection_is_refused_when_the_reference_moves_no_score_and_the_table_is_kept(tmp_path):
    with pytest.raises(NoSignalError, match="all-sites reference moved the clip score"):
        main([*args(tmp_path, "refused"), "--model.require_signal", "true"])
    assert (tmp_path / "refused" / "windows.csv").exists()
    assert not (tmp_path / "refused" / "selection.json").exists()


def test_a_finished_sweep_rerun_rebuilds_its_report_and_reselects_without_generating(
    uninterrupted, tmp_path, caplog
):
    shutil.copytree(uninterrupted / "full", tmp_path / "full")
    rows = (tmp_path / "full" / "items.rank0.jsonl").read_bytes()
    for name in ("windows.csv", "windows.json", "selection.json", "heatmap_clip.png"):
        (tmp_path / "full" / name).unlink()  # killed after its last row, before its report
    # the same folder spelled another way, and a selection-only setting changed
    with caplog.at_level(logging.INFO):
        main([*args(tmp_path, "elsewhere/../full"), "--model.margin", "0.5"])
    assert f"all {N_ITEMS} items are done already" in caplog.text
    assert "LocoGen (clip, remove): original" in caplog.text  # the summary
    assert (tmp_path / "full" / "items.rank0.jsonl").read_bytes() == rows  # nothing generated
    assert table(tmp_path, "full") == table(uninterrupted, "full")
    assert json.loads((tmp_path / "full" / "selection.json").read_text())["margin"] == 0.5
    assert (tmp_path / "full" / "heatmap_clip.png").exists()


RACING = ["--model.racing", "{first: 0.34, grow: 2, drop: 0.1}", "--data.seeds", "[0, 1, 2]"]


def keys(folder) -> set[str]:
    return {
        json.loads(line)["key"]
        for path in folder.glob("items.rank*.jsonl")
        for line in path.read_text().splitlines()
    }


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("racing")
    main([*args(tmp, "whole"), *RACING])
    return tmp


def test_racing_generates_fewer_items_and_reports_its_cost(raced):
    sel = json.loads((raced / "whole" / "selection.json").read_text())
    done = keys(raced / "whole")
    exhaustive = 3 * N_ITEMS  # three seeds
    assert 6 + 31 <= len(done) < exhaustive  # at least the references and the first round
    assert sel["search"] == "racing" and sel["images"] == len(done)
    assert (sel["sample_steps"], sel["exhaustive_sample_steps"]) == (2 * len(done), 2 * exhaustive)
    assert sel["seconds"] > 0
    rows = json.loads((raced / "whole" / "windows.json").read_text())
    finished = {(r["m"], r["start"]) for r in rows if r["n"] == 3}
    assert all((int(m), b["start"]) in finished for m, b in sel["best"].items())


def test_an_interrupted_race_resumes_to_the_same_rows(raced, tmp_path):
    main([*args(tmp_path, "resumed"), *RACING, "--trainer.limit_val_batches", "3"])
    assert 0 < len(keys(tmp_path / "resumed")) < len(keys(raced / "whole"))
    main([*args(tmp_path, "resumed"), *RACING])
    assert keys(tmp_path / "resumed") == keys(raced / "whole")
    assert table(tmp_path, "resumed") == table(raced, "whole")


def test_two_process_ddp_racing_plans_the_same_rounds(raced, tmp_path):
    two_process_job(*args(tmp_path, "ddp"), *RACING)
    assert len(list((tmp_path / "ddp").glob("items.rank*.jsonl"))) == 2
    assert keys(tmp_path / "ddp") == keys(raced / "whole")
    assert table(tmp_path, "ddp") == table(raced, "whole")


def test_a_batch_size_from_memory_gives_the_same_table(uninterrupted, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        main([*args(tmp_path, "auto"), "--data.batch_size", "auto"])
    size = int(caplog.text.split("data.batch_size auto: ")[1].split()[0])
    assert size == N_ITEMS  # a random-weight miniature: every window fits at once
    assert table(tmp_path, "auto") == table(uninterrupted, "full")
