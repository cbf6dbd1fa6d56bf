"""How to spend two cores on `loco world fit`: one process at two threads, or two at one each.

A world's operations are small (16-px images, 4-64 channels), so torch's second thread speeds
one process up far less than twice; two DDP processes, each with half the batch on one thread,
pay a gradient all-reduce instead. Each mode runs the config's own training (its data, pool,
planted swaps, EMA, checkpoints) for ``--steps`` steps without validation, alternately
``--rounds`` times; a callback times the steps after the first 30. Prints seconds per
step of each mode, the ratio from one run, and the minutes the config's ``max_steps`` would take
at each rate (validation not included). ``--ddp ddp_find_unused_parameters_true`` prices DDP's
search for unused parameters (no world needs it: those no conditioning reaches are frozen):
    python bench/world_processes.py configs/world/sd1.yaml configs/world/if_planted.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import yaml

CLOCK = "LOCO_BENCH_CLOCK"  # where the timing callback writes its seconds per step


class StepClock(L.Callback):
    """Writes the mean wall time of the steps after the first ``skip`` to ``$LOCO_BENCH_CLOCK``."""

    def __init__(self, skip: int = 30) -> None:
        self.skip, self.start = skip, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            steps = trainer.global_step - self.skip
            Path(os.environ[CLOCK]).write_text(
                json.dumps({"seconds_per_step": (time.perf_counter() - self.start) / steps})
            )


def modes(ddp: str) -> dict[str, list[str]]:
    """CLI options of each way to use two cores."""
    return {
        "1 x 2 threads": ["--trainer.devices", "1", "--trainer.strategy", "auto", "--threads", "2"],
        "2 x 1 thread": ["--trainer.devices", "2", "--trainer.strategy", ddp, "--threads", "1"],
    }


def step_seconds(config: Path, options: list[str], steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        clock = Path(tmp) / "clock.json"
        cmd = [sys.executable, "-m", "loco_lightning.cli", "world", "fit", "--config", str(config)]
        cmd += ["--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0"]
        cmd += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        cmd += ["--trainer.logger.init_args.save_dir", tmp]
        cmd += ["--trainer.callbacks+=bench.world_processes.StepClock", *options]
        env = {**os.environ, CLOCK: str(clock), "PYTHONPATH": os.getcwd()}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        return json.loads(clock.read_text())["seconds_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=230, help="steps per run (30 untimed)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two modes")
    parser.add_argument(
        "--ddp",
        default="ddp",
        help="the DDP strategy (ddp_find_unused_parameters_true adds the search for unused ones)",
    )
    args = parser.parse_args()
    for path in args.configs:
        config = yaml.safe_load(path.read_text())
        seconds: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for mode, options in modes(args.ddp).items():
                seconds.setdefault(mode, []).append(step_seconds(path, options, args.steps))
        max_steps = config.get("trainer", {}).get("max_steps", 0)
        print(f"{path} (batch {config.get('data', {}).get('batch_size', 64)}):")
        mean = {mode: sum(s) / len(s) for mode, s in seconds.items()}
        for mode, s in seconds.items():
            runs = ", ".join(f"{x:.3f}" for x in s)
            print(
                f"  {mode}: {mean[mode]:.3f} s/step ({runs}); "
                f"{max_steps} steps: {mean[mode] * max_steps / 60:.1f} min"
            )
        one, two = mean.values()
        print(f"  two processes / one: {two / one:.3f}")


if __name__ == "__main__":
    main()
