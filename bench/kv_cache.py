"""K/V precompute: one window sweep generated with and without caching each site's text K/V.

Prints the ratio of the two wall times from one run, after checking both give the same images.
    python bench/kv_cache.py --source world-sd1 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from loco_lightning.data.prompts import PromptPair
from loco_lightning.hooks import PromptSwap, intervene, sites
from loco_lightning.localization.data import sweep_items
from loco_lightning.models import load_model
from loco_lightning.models.sampling import denoise


def sweep(model, items, cache_kv: bool, steps: int) -> tuple[torch.Tensor, float]:
    cond = model.encode([it.pair.original for it in items])
    specs = [
        PromptSwap(it.window, it.pair.target, samples=(b,))
        for b, it in enumerate(items)
        if it.window
    ]
    start = time.perf_counter()
    with intervene(model.denoiser, specs, encode=model.encode, cache_kv=cache_kv):
        images = denoise(model, cond, [it.noise_seed for it in items], steps=steps)
    return images, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", default="auto")
    parser.add_argument("--source", default=None)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.family, args.source)
    pairs = [
        PromptPair("a red striped circle", "a red circle"),
        PromptPair("a blue dotted square", "a blue square"),
    ]
    items = sweep_items(pairs, len(sites(model.denoiser)), [1, 2], [0])
    sweep(model, items[:2], True, 2)  # warm-up
    times = {False: [], True: []}
    for _ in range(args.repeats):
        plain, seconds = sweep(model, items, False, args.steps)
        times[False].append(seconds)
        cached, seconds = sweep(model, items, True, args.steps)
        times[True].append(seconds)
        assert (cached - plain).abs().max() <= 1e-5, "cached K/V changed the images"
    plain, cached = min(times[False]), min(times[True])
    print(
        f"{args.family} ({args.source or 'default'}), {len(items)} images x {args.steps} steps, "
        f"{args.threads} threads: plain {plain:.2f} s, cached K/V {cached:.2f} s, "
        f"speedup {plain / cached:.2f}x (best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
