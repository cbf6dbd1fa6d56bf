"""Test helpers shared across the suite (miniatures are built once per session)."""

from __future__ import annotations

import atexit
import functools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.metrics.classifiers import ImageClassifier
from loco_lightning.models import LocoModel, load_model


@dataclass(frozen=True)
class Bright(ImageClassifier):
    """Flags images brighter than ``threshold`` on average: a classifier a test can redo."""

    threshold: float = 0.5

    def flags(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean((1, 2, 3)) > self.threshold


def trainer_stub(**options) -> SimpleNamespace:
    """What the world datamodule reads of a Trainer: one process, one step, from the start."""
    defaults = dict(max_steps=1, global_step=0, lightning_module=None, world_size=1, global_rank=0)
    return SimpleNamespace(**{**defaults, **options})


@functools.cache
def _scratch_root() -> Path:
    root = tempfile.TemporaryDirectory(prefix="loco-tests-")
    atexit.register(root.cleanup)
    return Path(root.name)


def scratch(prefix: str) -> Path:
    """A new folder for a run that tests share through a cache (a test's ``tmp_path`` ends with
    the test): under one folder per process, removed when the process exits."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch_root()))


@functools.cache
def mini_model(family: str) -> LocoModel:
    return load_model(family, "miniature")


def denoiser_inputs(model: LocoModel, prompts: list[str], seeds=None, t: int = 500) -> dict:
    """A denoiser call's kwargs for these prompts (as its kind calls it); row i's noise comes
    from ``seeds[i]`` alone."""
    from loco_lightning.models.sampling import initial_noise, told_guidance

    cond = told_guidance(model, model.encode(prompts), model.guidance)
    seeds = range(len(prompts)) if seeds is None else seeds
    kind = kind_of(model.denoiser)
    x = kind.pack(initial_noise(model, list(seeds)))
    return kind.inputs(model.denoiser, x, torch.full((len(x),), t), *cond)


def survival(model: LocoModel, name: str, n: int = 12) -> float:
    """Share of the first ``n`` efficacy prompts of ``datasets/world/<name>.eval.yaml`` whose
    image (seeds 0..n-1) the exact readers still find the concept in."""
    from loco_lightning.editing.data import load_eval_prompts
    from loco_lightning.metrics.readers import world_match
    from loco_lightning.models.sampling import denoise

    prompts = load_eval_prompts(f"datasets/world/{name}.eval.yaml")
    prompts = [p for p in prompts if p.group == "efficacy"][:n]
    images = denoise(model, model.encode([p.prompt for p in prompts]), list(range(len(prompts))))
    return float(world_match(model.world).scores(images, [p.expect for p in prompts]).mean())


@functools.cache
def tiny_clip_folder() -> str:
    """A random-weight CLIP saved as a folder (tokenizer, no image processor), for scoring tests."""
    from transformers import CLIPConfig, CLIPModel

    from loco_lightning.models.tokenizers import word_tokenizer

    tok = word_tokenizer([], 77, chars=True)
    torch.manual_seed(0)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "image_size": 16,
        "patch_size": 4,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
    folder = str(scratch("tiny-clip-"))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def miniature_job(job: str, config: str, out, tb, *extra: str) -> list[str]:
    """``loco`` arguments running a job's config on the SD-1 miniature, fast: 2 steps, float32,
    the tiny CLIP, results in ``out`` and TensorBoard in ``tb``."""
    return [
        job,
        "--config",
        config,
        "--model.diffusion.source",
        "miniature",
        "--model.clip",
        tiny_clip_folder(),
        "--model.diffusion.dtype",
        "float32",
        "--model.diffusion.steps",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--model.output_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(tb),
        *extra,
    ]


def two_process_job(*cli_args: str) -> None:
    """Run ``loco <cli_args>`` as two DDP processes on CPU at one thread each; a failure shows
    the job's own error output (a flaky run must say why)."""
    cmd = [sys.executable, "-m", "loco_lightning.cli", *cli_args]
    cmd += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
