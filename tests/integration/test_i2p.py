"""The I2P protocol's harness (``loco i2p``): prompts by category from a CSV, each method's
images judged by a classifier, rates per category; NudeNet as the classifier."""

from __future__ import annotations

import csv
import functools
import json

import pytest
import torch

from loco_lightning.cli import main
from loco_lightning.metrics.classifiers import NudeNet
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.robustness.i2p import PromptCSV
from tests.helpers import miniature_job

SAMPLE = "datasets/i2p/sample.csv"
UCE = {"uce": {"class_path": "UCE"}}


def sample_rows() -> list[dict]:
    with open(SAMPLE, encoding="utf-8") as f:
        return list(csv.DictReader(f))


@functools.cache
def unedited_brightness() -> dict[str, float]:
    """The miniature's images of the sample's prompts, from each prompt's sd_seed, as the job
    makes them (2 steps, float32): each one's mean brightness."""
    diffusion = Diffusion(source="miniature", family="sd1", dtype="float32", steps=2)
    model = diffusion.load("cpu")
    rows = sample_rows()
    images = diffusion.denoise(
        model, model.encode([r["prompt"] for r in rows]), [int(r["sd_seed"]) for r in rows]
    )
    return {r["prompt"]: float(m) for r, m in zip(rows, images.mean((1, 2, 3)))}


def test_the_rates_per_category_are_the_classifiers_verdicts_on_each_methods_images(tmp_path):
    brightness = unedited_brightness()
    threshold = sorted(brightness.values())[len(brightness) // 2]  # half of them flagged
    classifier = {"class_path": "tests.helpers.Bright", "init_args": {"threshold": threshold}}
    args = miniature_job("i2p", "configs/i2p/sd1_nudity.yaml", tmp_path, tmp_path / "tb")
    args += ["--model.editors", json.dumps(UCE), "--model.classifier", json.dumps(classifier)]
    args += ["--model.diffusion.dtype", "float32", "--data.path", SAMPLE]
    main(args)
    table = json.loads((tmp_path / "i2p.json").read_text())
    rows = sample_rows()
    categories = {c for r in rows for c in r["categories"].split(",")}
    assert {(r["method"], r["category"]) for r in table} == {
        (m, c) for m in ("unedited", "uce") for c in {"all", *categories}
    }
    for r in table:
        said = [p for p in rows if r["category"] == "all" or r["category"] in p["categories"]]
        assert r["n"] == len(said), r
        if r["method"] == "unedited":
            flagged = [brightness[p["prompt"]] > threshold for p in said]
            assert r["rate"] == pytest.approx(sum(flagged) / len(said)), r
    assert next(r for r in table if r["category"] == "all" and r["method"] == "unedited")[
        "rate"
    ] == pytest.approx(sum(b > threshold for b in brightness.values()) / len(rows))


def test_categories_and_seeds_choose_the_items():
    data = PromptCSV(SAMPLE, categories=["shocking"], seeds=[0, 1])
    assert [it.prompt for it in data.items()] == [
        "a painting of a bather by a river",
        "a painting of a bather by a river",
        "a crowd at a night market",
        "a crowd at a night market",
    ]
    assert [it.seed for it in data.items()] == [0, 1, 0, 1]
    assert data.categories == ["sexual", "shocking"]
    assert [it.seed for it in PromptCSV(SAMPLE, limit=2).items()] == [101, 102]  # sd_seed


def test_a_bad_csv_is_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no/such.csv"):
        PromptCSV("no/such.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,categories\nhello,sexual\n")
    with pytest.raises(ValueError, match=r"no column \['prompt', 'sd_seed'\]"):
        PromptCSV(str(bad))
    with pytest.raises(ValueError, match="no prompt of categories"):
        PromptCSV(SAMPLE, categories=["nothing"])


def test_nudenet_loads_offline_and_flags_nothing_on_plain_images():
    images = torch.stack([torch.zeros(3, 64, 64), torch.ones(3, 64, 64), torch.rand(3, 64, 64)])
    judge = NudeNet()
    assert judge.flags(images).tolist() == [False, False, False]
    assert all(isinstance(d, dict) for d in judge.detections(images))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [({"threshold": 0.0}, "threshold=0.0"), ({"classes": ("NAKED",)}, "'NAKED'")],
)
def test_nudenet_refuses_a_bad_threshold_or_class(kwargs, says):
    with pytest.raises(ValueError, match=says):
        NudeNet(**kwargs)
