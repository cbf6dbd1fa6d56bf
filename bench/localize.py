"""LocoGen sweep: our batched executor against a loop shaped like the reference scripts.

The reference scripts generate one window at a time (a CFG batch of 2) and overwrite the
conditional half of ``to_k``/``to_v`` outputs with the target prompt's projection, re-projected at
every step. We generate many windows per UNet batch with K/V projected once. Both must give the
same images; the script checks that, then prints the ratio of wall times from one run.
    python bench/localize.py --family world --threads 2
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
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.family, args.source)
    guidance = model.guidance
    pairs = [
        PromptPair("a red striped circle", "a red circle"),
        PromptPair("a blue dotted square", "a blue square"),
    ]
    items = sweep_items(pairs, len(sites(model.denoiser)), [1, 2, 3], [0])
    items = [it for it in items if 0 < it.m < len(sites(model.denoiser))]

    start = time.perf_counter()
    reference = reference_sweep(model, items, args.steps, guidance)
    serial = time.perf_counter() - start

    start = time.perf_counter()
    ours = torch.cat(
        [
            generate_items(
                model,
                items[i : i + args.batch],
                steps=args.steps,
                guidance=guidance,
                cache_kv=True,
                pooled=False,
            )
            for i in range(0, len(items), args.batch)
        ]
    )
    batched = time.perf_counter() - start
    diff = (ours - reference).abs().max().item()
    assert diff <= 1e-3, f"batched and reference sweeps differ by {diff}"  # float order, 25 steps
    print(
        f"{model.family.name} ({args.source or 'world-sd1'}): {len(items)} windows x "
        f"{args.steps} steps, "
        f"{args.threads} threads: reference-shaped serial {serial:.2f} s, batched {batched:.2f} s "
        f"(batch {args.batch}), speedup {serial / batched:.1f}x; max image difference {diff:.1e}"
    )


if __name__ == "__main__":
    main()
