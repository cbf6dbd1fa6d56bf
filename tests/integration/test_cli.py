"""The ``loco`` command end to end, and every YAML under configs/ instantiates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from loco_lightning.cli import HELP, JOBS, build, main

CONFIGS = sorted(Path(__file__).resolve().parents[2].glob("configs/*/*.yaml"))


def test_loco_help_lists_every_job():
    out = subprocess.run(
        [sys.executable, "-m", "loco_lightning.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(name in out for name in JOBS)


@pytest.mark.parametrize("argv", [["--help"], ["localize", "--help"], ["edit", "-h"]])
def test_loco_help_imports_neither_torch_nor_lightning(argv):
    """`loco --help` and `loco <job> --help` answer at once: the heavy libraries load with the
    first job (8 s here); a job's help is stored, and checked against the real one below."""
    script = (
        f"import sys; from loco_lightning.cli import main; main({argv!r}); "
        "print(sorted(m for m in ('torch', 'lightning', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    assert "usage: loco" in out.stdout


def test_the_stored_help_of_every_job_is_what_lightningcli_prints():
    """Rendered in a fresh interpreter: the help lists the subclasses defined so far, and tests
    define some of their own."""
    script = (
        "import json; from loco_lightning.cli import HELP, JOBS, render_help; "
        "print(json.dumps([n for n in JOBS if (HELP / f'{n}.txt').read_text() != render_help(n)]))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    stale = json.loads(run.stdout.strip().splitlines()[-1])
    assert not stale, (
        f"the stored help of {stale} is stale: regenerate it with "
        "`python -c 'from loco_lightning.cli import write_help; write_help()'`"
    )
    assert "--model.margin" in (HELP / "localize.txt").read_text()
    assert "--trainer.max_steps" not in (HELP / "localize.txt").read_text()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_instantiates(config):
    assert config.parent.name in JOBS, f"configs/<job>/: no job named {config.parent.name!r}"
    cli = build(config.parent.name, ["--config", str(config)], run=False)
    assert cli.model is not None and cli.datamodule is not None


def test_windows_job_writes_the_grid(tmp_path):
    main(
        [
            "windows",
            "--config",
            "configs/windows/world.yaml",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--model.diffusion.steps",
            "2",
            "--data.window_sizes",
            "[1]",
            "--data.seeds",
            "[0]",
            "--data.pairs",
            '[{"original": "a red striped circle", "target": "a red circle"}]',
        ]
    )
    [grid] = tmp_path.glob("windows/windows.png")
    legend = (grid.parent / "windows.txt").read_text()
    columns = legend.splitlines()[0].split()[1:]
    assert columns[:3] == ["none", "0-6", "0-0"] and len(columns) == 2 + 7
    width, height = Image.open(grid).size
    assert width > 3 * height  # one labelled row, nine labelled columns
    assert list(tmp_path.glob("windows/events.out.tfevents.*"))


def loco_edit(tmp_path, editors: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "loco_lightning.cli", "edit", "--config"]
    cmd += ["configs/edit/world_style.yaml", "--trainer.logger", "false"]
    cmd += ["--model.output_dir", str(tmp_path), "--model.editors", editors]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_a_users_mistake_is_one_line_and_exit_status_2_and_debug_shows_the_traceback(tmp_path):
    bad = loco_edit(tmp_path, '{"x": {"class_path": "LocoEdit", "init_args": {"lambda_k": -1}}}')
    assert bad.returncode == 2, bad.stderr[-2000:]
    [line] = [x for x in bad.stderr.splitlines() if x.startswith("loco: error:")]
    assert "lambda_k=-1.0" in line and "> 0" in line and "Traceback" not in bad.stderr
    missing = '{"x": {"class_path": "Saved", "init_args": {"path": "no/such.safetensors"}}}'
    shown = loco_edit(tmp_path, missing, LOCO_DEBUG="1")
    assert shown.returncode == 1 and "Traceback" in shown.stderr
    assert "FileNotFoundError: Saved edit 'no/such.safetensors' does not exist" in shown.stderr


def test_the_cli_filters_library_noise_and_lightning_tips_but_not_our_messages():
    script = (
        "import logging, warnings; from loco_lightning.cli import quiet; quiet()\n"
        "from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "warnings.warn('`torch_dtype` is deprecated and will be removed', FutureWarning)\n"
        "rank_zero_warn('Found 66 module(s) in eval mode at the start of training.')\n"
        "rank_zero_info('💡 Tip: For seamless cloud logging, try installing litlogger')\n"
        "rank_zero_info('LocoGen (clip, remove): original 57.1')\n"
        "warnings.warn('a warning of ours', UserWarning)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "LocoGen (clip, remove)" in out.stderr and "a warning of ours" in out.stderr
    for noise in ("torch_dtype", "eval mode", "Tip:"):
        assert noise not in out.stderr, out.stderr


def test_a_named_run_is_one_folder_with_results_events_and_config_and_a_rerun_reuses_it(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # lightning_logs/<job>/<name> is relative to where loco runs
    root = Path(__file__).resolve().parents[2]
    args = ["localize", "--config", str(root / "configs/localize/world_shape.yaml"), "--name"]
    args += ["shape_try", "--data.pairs", str(root / "datasets/world/shape_circle.pairs.yaml")]
    args += ["--data.window_sizes", "[1]", "--data.seeds", "[0]", "--model.diffusion.steps", "2"]
    main(args)
    main(args)  # a rerun: finished, so nothing is generated, and no second folder appears
    assert [p.name for p in (tmp_path / "lightning_logs").rglob("*") if p.is_dir()] == [
        "localize",
        "shape_try",
    ]
    run = tmp_path / "lightning_logs" / "localize" / "shape_try"
    assert {"config.yaml", "selection.json", "windows.csv", "hparams.yaml"} <= {
        p.name for p in run.iterdir()
    }
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    resolved = yaml.safe_load((run / "hparams.yaml").read_text())["resolved"]  # not the Nones
    assert resolved["clip"] == "worldclip" and resolved["diffusion"]["family"] == "sd1"
    assert resolved["diffusion"]["steps"] == 2 and resolved["diffusion"]["guidance"] > 1
