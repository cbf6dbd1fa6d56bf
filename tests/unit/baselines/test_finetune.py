"""The fine-tuning baselines on the SD-1 miniature: a killed run resumes exactly; the frozen
teacher and the checkpoint hold what they should."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from loco_lightning.cli import main
from tests.helpers import tiny_clip_folder


class Crash(L.Callback):
    """Kills the run after ``at`` optimisation steps, as a lost machine would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.at:
            raise SystemExit(f"killed after step {trainer.global_step}")


def fit(job: str, out, steps: int, *extra: str, crash: int | None = None) -> None:
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(out / "ckpt"),
                "every_n_train_steps": 2,
                "save_last": True,
            },
        },
        {"class_path": "loco_lightning.callbacks.edit_report.EditReport"},
    ]
    if crash is not None:
        callbacks.append({"class_path": f"{__name__}.Crash", "init_args": {"at": crash}})
    main(
        [
            job,
            "--config",
            f"configs/{job}/world_style.yaml",
            "--model.diffusion.family",
            "sd1",
            "--model.diffusion.source",
            "miniature",
            "--model.clip",
            tiny_clip_folder(),
            "--model.diffusion.steps",
            "2",
            "--model.requests",
            json.dumps([{"concept": "striped", "target": "", "templates": ["a red {} circle"]}]),
            "--model.output_dir",
            str(out),
            "--trainer.logger.init_args.save_dir",
            str(out / "tb"),
            "--trainer.callbacks",
            json.dumps(callbacks),
            "--data.prompts",
            "datasets/world/style_striped.eval.yaml",
            "--data.seeds",
            "[0]",
            "--data.train_steps",
            str(steps),
            *extra,
        ]
    )


@pytest.mark.parametrize("job", ["esd", "ablate"])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, job):
    fit(job, tmp_path / "whole", 6)
    with pytest.raises(SystemExit, match="killed after step 3"):
        fit(job, tmp_path / "killed", 6, crash=3)
    assert not (tmp_path / "killed" / f"{job}.safetensors").exists()
    fit(job, tmp_path / "killed", 6, "--ckpt_path", str(tmp_path / "killed" / "ckpt" / "last.ckpt"))
    whole = load_file(tmp_path / "whole" / f"{job}.safetensors")
    resumed = load_file(tmp_path / "killed" / f"{job}.safetensors")
    assert whole.keys() == resumed.keys() and all(v.abs().max() > 0 for v in whole.values())
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # the checkpoint holds the trained weights only: no frozen teacher, no scorer
    state = torch.load(tmp_path / "whole" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert {k.removeprefix("unet.") for k in state} == set(whole)


def test_only_the_chosen_sites_and_projections_train_and_the_teacher_stays_outside():
    from loco_lightning.baselines import ConceptAblation, FineTune, FineTuneModule
    from loco_lightning.hooks import sites
    from loco_lightning.models.diffusion import Diffusion

    module = FineTuneModule(
        [{"concept": "striped", "target": "", "templates": ["a red {} circle"]}],
        ConceptAblation(),
        diffusion=Diffusion(family="sd1", source="miniature"),
        tuning=FineTune(sites=[3], train="kv"),
        clip=tiny_clip_folder(),
    )
    module.setup("fit")
    site = sites(module.unet)[3]
    assert module.trainable == [f"{site.path}.to_k.weight", f"{site.path}.to_v.weight"]
    assert {n for n, p in module.unet.named_parameters() if p.requires_grad} == set(
        module.trainable
    )
    assert not any(k.startswith("teacher") for k in module.state_dict())
    assert module.teacher.module is not module.unet


def test_a_run_shorter_than_the_epoch_writes_its_delta_and_a_longer_resume_trains_to_it(tmp_path):
    def steps() -> int:
        with safe_open(str(tmp_path / "esd.safetensors"), "pt") as f:
            return json.loads(f.metadata()["loco_edit"])["steps"]

    fit("esd", tmp_path, 6, "--trainer.max_steps", "2")
    assert steps() == 2 and (tmp_path / "results.csv").exists()
    last = str(tmp_path / "ckpt" / "last.ckpt")
    fit("esd", tmp_path, 6, "--trainer.max_steps", "4", "--ckpt_path", last)
    assert steps() == 4
    fit("esd", tmp_path, 6, "--ckpt_path", last)  # to the end of the epoch (data.train_steps)
    assert steps() == 6
