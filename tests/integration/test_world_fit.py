"""`loco world|worldvae|worldclip fit` end to end: train, validate, log, export, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from loco_lightning.cli import build
from loco_lightning.models import load_model
from loco_lightning.models.world import RECORD_NAME
from loco_lightning.models.worldclip import load_worldclip
from tests.helpers import two_process_job

SMOKE = "configs/world/smoke.yaml"


def test_world_fit_validates_exports_and_resumes(tmp_path):
    common = ["--config", SMOKE, "--trainer.logger.init_args.save_dir", str(tmp_path)]
    build("world", ["fit", *common])
    run = tmp_path / "world-smoke"  # the run's one folder: no version_N
    record = json.loads((run / "model" / RECORD_NAME).read_text())
    assert record["steps"] == 4 and record["world"]["planted"] == {"colour": [5, 6]}
    assert {"val/shape", "val/colour", "val/style", "val/all"} <= set(record["metrics"])
    assert record["config"]["model"]["planted"] == {"colour": [5, 6]}
    assert list(run.glob("events.out.tfevents.*")) and (run / "checkpoints" / "last.ckpt").exists()
    exported = load_model(source=str(run / "model"))  # an ordinary SD-1 pipeline folder
    assert exported.family.name == "sd1" and exported.world is not None

    # a new fit there would overwrite the exported model: refused; a resume continues in place
    with pytest.raises(ValueError, match="earlier run's checkpoints: resume it with --ckpt_path"):
        build("world", ["fit", *common])
    build("world", ["fit", *common, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    assert [p.name for p in tmp_path.iterdir()] == ["world-smoke"]
    assert json.loads((run / "model" / RECORD_NAME).read_text())["steps"] == 6


def test_world_fit_on_two_ddp_processes_exports_once(tmp_path):
    """Two processes at one thread each, with a pool: every process reaches the export (the
    log folder is broadcast), one writes it, and its record names both processes."""
    save = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    two_process_job("world", "fit", "--config", SMOKE, *save, "--data.pool", "16")
    record = json.loads((tmp_path / "world-smoke" / "model" / RECORD_NAME).read_text())
    assert record["processes"] == 2 and record["threads"] == 1 and record["steps"] == 4
    assert record["data"]["pool"] == 16 and {"val/shape", "val/all"} <= set(record["metrics"])
    assert load_model(source=str(tmp_path / "world-smoke" / "model")).family.name == "sd1"


def fit3(job: str, tmp_path, *extra: str) -> tuple[Path, dict]:
    """Three steps of ``loco <job> fit`` on its default config: the run folder and its record."""
    build(
        job,
        [
            "fit",
            "--config",
            f"configs/{job}/default.yaml",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.max_steps",
            "3",
            "--trainer.val_check_interval",
            "3",
            "--trainer.enable_progress_bar",
            "false",
            *extra,
        ],
    )
    run = tmp_path / job
    return run, json.loads((run / "model" / RECORD_NAME).read_text())


def test_worldvae_fit_exports_a_diffusers_autoencoder_with_its_latent_scale(tmp_path):
    run, record = fit3("worldvae", tmp_path, "--data.batch_size", "8", "--data.val_size", "16")
    assert record["steps"] == 3 and {"val/mse", "val/shape", "val/colour"} <= set(record["metrics"])
    vae = AutoencoderKL.from_pretrained(run / "model")
    assert vae.config.scaling_factor == pytest.approx(1 / record["latent_std"], rel=1e-3)
    assert vae.encode(torch.zeros(1, 3, 16, 16)).latent_dist.mean.shape == (1, 4, 8, 8)


def test_worldclip_fit_exports_a_loadable_clip(tmp_path):
    run, record = fit3(
        "worldclip",
        tmp_path,
        "--trainer.limit_val_batches",
        "1",
        "--data.batch_size",
        "16",
        "--data.val_batch_size",
        "16",
    )
    assert record["steps"] == 3 and "val/rank" in record["metrics"]
    clip = load_worldclip(run / "model")
    assert clip.text_features(["a red circle"]).shape == (1, 64)
