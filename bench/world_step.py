"""A world's training step, part by part: where `loco world fit` spends its time on this machine.

Builds the module and data stream of each world config (no Trainer), then runs steps as
Lightning runs them (loss, backward, gradient clipping, optimizer, EMA), alternating the
trainers' fused AdamW, listed weight average (``WarmupEMA``) and remembering tokenizers with the
reference AdamW, ``AveragedModel``'s update and the plain tokenizers (each text tokenized at
every step). Prints milliseconds per part, seconds per step,
the reference/trainer ratio from one run, and the minutes the config's ``max_steps`` would take at
that rate (validation not included), in one process (bench/world_processes.py compares it
with two).
    python bench/world_step.py --threads 2 configs/world/*.yaml
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from loco_lightning.data.world import WorldDataset
from loco_lightning.training.schedules import adamw_warmup_cosine
from loco_lightning.training.world import EMAWarmup, WorldDiffusion

PARTS = ("data", "loss", "backward", "optimizer", "ema")


def run(module: WorldDiffusion, batches, optimizer, ema, clip: float, n: int) -> dict[str, float]:
    """Milliseconds per part over ``n`` steps (after one untimed step)."""
    spent: dict[str, float] = defaultdict(float)
    for i in range(n + 1):
        marks = [time.perf_counter()]
        batch = next(batches)
        marks.append(time.perf_counter())
        loss = module.diffusion_loss(batch)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(module.net.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()
        marks.append(time.perf_counter())
        ema.update_parameters(module.net)
        marks.append(time.perf_counter())
        if i:  # the first step allocates
            for part, a, b in zip(PARTS, marks, marks[1:]):
                spent[part] += (b - a) * 1000.0 / n
    return dict(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per optimizer")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for path in args.configs:
        config = yaml.safe_load(path.read_text())
        module = WorldDiffusion(**config.get("model", {}))
        module.setup("fit")
        data = {k: v for k, v in config.get("data", {}).items() if not k.startswith("val")}
        batch_size = data.pop("batch_size", 64)
        workers = data.pop("num_workers", 0)  # as the config's trainer renders: aside or not
        data.pop("pool", None)  # every step renders: the data part is the pool's first pass
        stream = WorldDataset(length=10**9, variants=module.caption_variants, **data)
        batches = iter(DataLoader(stream, batch_size=batch_size, num_workers=workers))
        params = list(module.net.parameters())
        # both step the same weights in turn, each with its own state: what they learn is not
        # the question, only what a step costs
        optimizers = {
            "trainer": adamw_warmup_cosine(params, 1e-4, 0.01, 1, 10**6)["optimizer"],
            "reference": torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01),
        }
        pipes = {"trainer": module.train_pipe, "reference": module._pipeline(module.net)}
        averages = {
            "trainer": module.ema,
            "reference": AveragedModel(module.net, multi_avg_fn=EMAWarmup(0.999)),
        }
        clip = config.get("trainer", {}).get("gradient_clip_val") or float("inf")
        totals = {name: defaultdict(float) for name in optimizers}
        for _ in range(args.rounds):
            for name, optimizer in optimizers.items():
                ema = averages[name]
                module.train_pipe = pipes[name]
                for part, ms in run(module, batches, optimizer, ema, clip, args.steps).items():
                    totals[name][part] += ms / args.rounds
        step = {name: sum(parts.values()) / 1000.0 for name, parts in totals.items()}
        max_steps = config.get("trainer", {}).get("max_steps", 0)
        print(f"{path} ({args.threads} threads, batch {batch_size}):")
        for name, parts in totals.items():
            print(
                f"  {name:9s} {step[name]:.3f} s/step = "
                + ", ".join(f"{part} {parts[part]:.0f}" for part in PARTS)
                + f" ms; {max_steps} steps: {step[name] * max_steps / 60:.1f} min"
            )
        print(f"  reference / trainer: {step['reference'] / step['trainer']:.3f}")


if __name__ == "__main__":
    main()
