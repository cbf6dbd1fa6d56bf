"""LocoGen sweep: our batched executor against a loop shaped like the reference scripts.

The reference scripts generate one window at a time (a CFG batch of 2) and overwrite the
conditional half of ``to_k``/``to_v`` outputs with the target prompt's projection, re-projected at
every step. We generate many windows per UNet batch with K/V projected once, the batch chosen
from measured memory (``data.batch_size: auto``). Both must give the same images; the script
checks that on the windows the serial loop runs (its time per window is constant, so it runs
``--serial`` of them and is extrapolated), then prints the ratio of wall times from one run.
    python bench/localize.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from loco_lightning.data.prompts import PromptPair
from loco_lightning.hooks import sites
from loco_lightning.localization.data import sweep_items
from loco_lightning.localization.generate import generate_items
from loco_lightning.models import load_model
from loco_lightning.models.memory import available_bytes, fit_batch, peak_bytes
from loco_lightning.models.sampling import denoise


def reference_sweep(model, items, steps: int, guidance: float) -> torch.Tensor:
    """One generation per window; forward hooks overwrite the conditional K/V at the window."""
    unet, all_sites = model.denoiser, sites(model.denoiser)
    images = []
    for it in items:
        target = model.encode([it.pair.target]).context
        handles = []
        for site in all_sites:
            if site.index not in it.window:
                continue
            attn = unet.get_submodule(site.path)
            for proj in (getattr(attn, site.key_name), getattr(attn, site.value_name)):

                def overwrite(module, args, output, target=target):
                    output = output.clone()
                    output[1:] = F.linear(target, module.weight, module.bias)
                    return output

                handles.append(proj.register_forward_hook(overwrite))
        try:
            cond = model.encode([it.pair.original])
            images.append(denoise(model, cond, [it.noise_seed], steps=steps, guidance=guidance))
        finally:
            for h in handles:
                h.remove()
    return torch.cat(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", default="auto")
    parser.add_argument("--source", default=None)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", default="auto", help="items per batch, or auto (from memory)")
    parser.add_argument("--pairs", type=int, default=12, help="prompt pairs (the world configs')")
    parser.add_argument("--serial", type=int, default=24, help="windows the serial loop runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.family, args.source)
    guidance, n = model.guidance, len(sites(model.denoiser))
    colours, shapes = ("red", "blue", "green"), ("circle", "square", "triangle", "star")
    pairs = [PromptPair(f"a {c} striped {s}", f"a {c} {s}") for c in colours for s in shapes][
        : args.pairs
    ]
    items = [it for it in sweep_items(pairs, n, [1, 2, 3], [0]) if 0 < it.m < n]

    def generate(chunk, steps=args.steps):
        return generate_items(
            model, chunk, steps=steps, guidance=guidance, cache_kv=True, pooled=False
        )

    generate(items[:2], 1)  # warm-up: first calls allocate
    if args.batch == "auto":
        budget = available_bytes(model.device) // 2
        batch = fit_batch(lambda k: peak_bytes(lambda: generate(items[:k], 1)), budget, len(items))
    else:
        batch = int(args.batch)
    serial_items = items[:: max(1, len(items) // args.serial)][: args.serial]
    start = time.perf_counter()
    reference = reference_sweep(model, serial_items, args.steps, guidance)
    serial = (time.perf_counter() - start) * len(items) / len(serial_items)

    start = time.perf_counter()
    ours = [generate(items[i : i + batch]) for i in range(0, len(items), batch)]
    batched = time.perf_counter() - start
    ours = torch.cat(ours)[[items.index(it) for it in serial_items]]
    diff = (ours - reference).abs().max().item()
    assert diff <= 1e-3, f"batched and reference sweeps differ by {diff}"  # float order, 25 steps
    print(
        f"{model.family.name} ({args.source or 'world-sd1'}): {len(items)} windows x "
        f"{args.steps} steps, {args.threads} threads: reference-shaped serial {serial:.1f} s "
        f"(extrapolated from {len(serial_items)} windows), batched {batched:.1f} s (batch "
        f"{batch}{', from memory' if args.batch == 'auto' else ''}), speedup "
        f"{serial / batched:.1f}x; max image difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
