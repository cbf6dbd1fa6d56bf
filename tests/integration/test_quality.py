"""COCO-style image quality (``loco quality``) on the world's sample: FID against reference
images and its saved statistics, CLIP score."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from loco_lightning.cli import main
from loco_lightning.editing.quality import STATISTICS, CaptionsData, read_image
from loco_lightning.metrics.clip import load_clip
from loco_lightning.metrics.fid import ClipImageFeatures, fid_metric
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.pipeline import packaged
from loco_lightning.models.sampling import noise_seed
from tests.helpers import scratch

SAMPLE = "datasets/quality/world_sample"


def run(out, references: str = SAMPLE) -> list[dict]:
    main(
        [
            "quality",
            "--config",
            "configs/quality/world_style.yaml",
            "--model.editors",
            json.dumps({"uce": {"class_path": "UCE"}}),
            "--model.references",
            references,
            "--data.seeds",
            "[0]",
            "--model.output_dir",
            str(out),
            "--trainer.logger",
            "false",
        ]
    )
    return json.loads((out / "quality.json").read_text())


@functools.cache
def first():
    out = scratch("quality-")
    return out, run(out)


def test_the_unedited_fid_is_torchmetrics_fid_of_the_references_and_the_images():
    _, table = first()
    data = CaptionsData(f"{SAMPLE}/captions.csv")
    diffusion = Diffusion(source="world-sd1")
    model = diffusion.load("cpu")
    captions = [it.caption for it in data.items()]
    seeds = [noise_seed(0, i, "per_prompt") for i in range(len(captions))]
    images = diffusion.denoise(model, model.encode(captions), seeds)
    files = sorted(Path(SAMPLE).glob("*.png"))
    fid = fid_metric(ClipImageFeatures(*load_clip(packaged("worldclip"))))
    fid.update(torch.stack([read_image(p) for p in files]), real=True)
    fid.update(images, real=False)
    row = next(r for r in table if r["method"] == "unedited")
    assert row["n"] == 16 and row["fid"] == pytest.approx(float(fid.compute()), rel=1e-5)
    assert {r["method"] for r in table} == {"unedited", "uce"}
    assert all(r["fid"] >= 0 and r["clip"] > 0 for r in table)


def test_the_saved_statistics_give_the_same_table(tmp_path):
    out, table = first()
    assert run(tmp_path, str(out / STATISTICS)) == table


def test_statistics_of_other_features_and_bad_references_are_refused(tmp_path):
    stats = tmp_path / "other.safetensors"
    save_file({"real_features_sum": torch.zeros(2)}, str(stats), metadata={"features": "x"})
    with pytest.raises(ValueError, match="holds FID statistics of 'x' features"):
        run(tmp_path / "a", str(stats))
    with pytest.raises(FileNotFoundError, match="references='no/such'"):
        run(tmp_path / "b", "no/such")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(f"{SAMPLE}/00.png", lonely / "00.png")
    with pytest.raises(ValueError, match="holds 1 images"):
        run(tmp_path / "c", str(lonely))


def test_a_captions_file_without_captions_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no/such.csv"):
        CaptionsData("no/such.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    with pytest.raises(ValueError, match="no caption column"):
        CaptionsData(str(bad))
