"""Each baseline removes the striped style on the shipped world model: its survival, read by the
exact readers on the efficacy prompts, falls well below the unedited model's.

Budget (1 core next to a busy one): ~0.15 s per ESD-x/Ablation step and ~0.2 s per generated
image, so each test uses 16 of the request's templates, one 10-step training image per prompt,
a few dozen steps (a large learning rate) and the 12 efficacy prompts with 2 seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from loco_lightning.cli import main
from loco_lightning.editing.requests import edit_requests
from loco_lightning.models.pipeline import WEIGHTS
from tests.helpers import tiny_clip_folder

SOURCE = "world-sd1"
EDIT = "datasets/world/style_striped.edit.yaml"
EVAL = "datasets/world/style_striped.eval.yaml"

pytestmark = pytest.mark.skipif(
    not (WEIGHTS / SOURCE).exists(),
    reason=f"the packaged {SOURCE} model is not in {WEIGHTS} (train it: configs/world/)",
)


def run(job: str, tmp_path, *extra: str) -> dict[str, float]:
    """Concept survival (exact readers, efficacy prompts) of the unedited model and the edit."""
    [request] = edit_requests(EDIT)
    subset = {
        "concept": request.concept,
        "target": request.target,
        "templates": list(request.templates[::3]),
        "target_templates": list(request.target_templates[::3]),
    }
    prompts = tmp_path / "efficacy.yaml"
    efficacy = yaml.safe_load(Path(EVAL).read_text())["efficacy"]
    prompts.write_text(yaml.safe_dump({"efficacy": efficacy}))
    main(
        [
            job,
            "--config",
            f"configs/{job}/world_style.yaml",
            "--model.diffusion.source",
            SOURCE,
            "--model.clip",
            tiny_clip_folder(),  # the exact readers judge here, not CLIP
            "--model.requests",
            json.dumps([subset]),
            "--model.output_dir",
            str(tmp_path / "out"),
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "tb"),
            "--trainer.callbacks",
            json.dumps([{"class_path": "loco_lightning.callbacks.edit_report.EditReport"}]),
            "--trainer.enable_checkpointing",
            "false",
            "--data.prompts",
            str(prompts),
            "--data.seeds",
            "[0, 1]",
            *extra,
        ]
    )
    table = json.loads((tmp_path / "out" / "results.json").read_text())
    return {r["method"]: r["reader"] for r in table if r["group"] == "efficacy"}


FINETUNE = ["--model.tuning.images_per_prompt", "1", "--model.tuning.image_steps", "10"]


@pytest.mark.parametrize(
    ("job", "extra"),
    [
        ("esd", [*FINETUNE, "--data.train_steps", "30"]),
        ("ablate", [*FINETUNE, "--data.train_steps", "60"]),
        ("quickfix", []),
    ],
)
def test_the_baseline_lowers_the_concept_survival(tmp_path, job, extra):
    survival = run(job, tmp_path, *extra)
    assert survival["unedited"] >= 0.7, survival  # the world draws striped when asked
    assert survival[job] <= survival["unedited"] - 0.3, survival
