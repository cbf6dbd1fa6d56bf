"""LocoGen sweep on a full-size denoiser architecture (a UNet; PixArt-α's, SANA's, SD3's or
FLUX.1-dev's transformer) with random weights (timing does not depend on weight values): a
reference-shaped serial fp32 loop against our batched executor in bf16. Joint attention (SD3,
FLUX) has no reference code: its serial loop is our executor one window per generation, and
every window costs a companion row.

Prints seconds per sweep, the ratio, the achieved fraction of the bf16 matmul peak, and the peak
memory of one batch; ``--batch auto`` chunks the windows into the largest batch whose measured
memory fits the card. ``bench/gpu.sh`` runs the issue's configurations in one go.
    python bench/gpu_localize.py --family sd1 --size 64 --steps 50 --windows 16 --batch auto
    python bench/gpu_localize.py --family sdxl --size 128 --steps 50 --m 4 --batch auto
    python bench/gpu_localize.py --family pixart --size 128 --steps 20 --m 4 --batch auto
    python bench/gpu_localize.py --family sana --size 32 --steps 20 --m 4 --batch auto
    python bench/gpu_localize.py --family sd3 --size 128 --steps 28 --m 4 --batch auto
    python bench/gpu_localize.py --family flux --size 128 --steps 28 --m 4 --batch auto
Runs on CPU for a smoke check: --device cpu --size 8 --steps 2 --windows 2 --serial-windows 1
(--miniature for SD3 and FLUX, whose full-size weights do not fit 24 GiB in fp32)
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from loco_lightning.hooks import PromptSwap, intervene, sites
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.localization.windows import windows
from loco_lightning.models import get_family
from loco_lightning.models.families import build_denoiser
from loco_lightning.models.memory import available_bytes, fit_batch, peak_bytes


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def contexts(unet, n: int, seed: int) -> torch.Tensor:
    """Stand-in text contexts (the text encoder is not what is timed)."""
    base = kind_of(unet).trace_inputs(unet, batch=n)["encoder_hidden_states"]
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, 77, base.shape[-1]), generator=g).to(base)


def added(unet, n: int) -> dict | None:
    """Stand-in global inputs: SD-XL's, PixArt's size, SD3's and FLUX's pooled CLIP (and
    FLUX.1-dev's guidance scale)."""
    kind = kind_of(unet)
    if not hasattr(kind, "trace_added"):  # a UNet
        return kind.trace_inputs(unet, batch=n).get("added_cond_kwargs")
    p = next(unet.parameters())
    return kind.trace_added(unet, n, dict(device=p.device, dtype=p.dtype))


def step_inputs(unet, n: int, size: int):
    p = next(unet.parameters())
    kind = kind_of(unet)
    x = torch.randn(n, kind.latent_channels(unet), size, size, device=p.device, dtype=p.dtype)
    return kind.pack(x), torch.tensor(500, device=p.device)


def rows(unet) -> int:
    """Denoiser rows per window: a guidance batch of 2, or 1 where the scale is an input."""
    return 1 if unet.config.get("guidance_embeds") else 2


def joint(unet) -> bool:
    """Whether the sites attend jointly (SD3, FLUX): a swap reads a companion row's stream."""
    return sites(unet)[0].kind in ("joint", "fused")


def update(x, eps):
    """A stand-in sampler step (the sampler is not what is timed); learned variance dropped."""
    eps = eps[: len(x)]
    return x - 0.01 * (eps[:, : x.shape[1]] if x.ndim == 4 else eps)


def call(net, x, t, ctx, add):
    """One denoiser call, whatever its kind (the sampler update is not what is timed)."""
    return kind_of(net).forward(net, x, t, ctx, add, None)


@torch.no_grad()
def serial_sweep(unet, wins, steps: int, size: int, device: str) -> float:
    """Reference shape: one window per generation, CFG batch of 2, K/V re-projected each step
    (joint attention: our executor, one window per generation, as no reference code exists)."""
    if joint(unet):
        return batched_sweep(unet, wins, steps, size, 1, device, cache_kv=False)
    all_sites = sites(unet)
    uncond, cond, target = contexts(unet, 1, 0), contexts(unet, 1, 1), contexts(unet, 1, 2)
    ctx = torch.cat([uncond, cond])
    add = added(unet, 2)
    target = kind_of(unet).text_states(unet, target, None)  # what sites read (PixArt: projected)
    sync(device)
    start = time.perf_counter()
    for window in wins:
        handles = []
        for s in all_sites:
            if s.index in window:
                attn = unet.get_submodule(s.path)
                for proj in (getattr(attn, s.key_name), getattr(attn, s.value_name)):

                    def hook(m, a, out):
                        out = out.clone()
                        out[1:] = F.linear(target.to(out.dtype), m.weight, m.bias)
                        return out

                    handles.append(proj.register_forward_hook(hook))
        x, t = step_inputs(unet, 1, size)
        for _ in range(steps):
            x = update(x, call(unet, torch.cat([x, x]), t, ctx, add))
        for h in handles:
            h.remove()
    sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def batched_sweep(
    unet, wins, steps: int, size: int, batch: int, device: str, cache_kv: bool = True
) -> float:
    """Ours: many windows per denoiser batch, K/V of each context projected once (joint
    attention: per call, with a companion row per window)."""
    target = contexts(unet, 1, 2)
    r = rows(unet)

    def encode(prompts):
        return target.expand(len(prompts), -1, -1), added(unet, len(prompts))

    sync(device)
    start = time.perf_counter()
    for i in range(0, len(wins), batch):
        chunk = wins[i : i + batch]
        n = len(chunk)
        halves = [contexts(unet, 1, s).expand(n, -1, -1) for s in (0, 1)[2 - r :]]
        ctx = torch.cat(halves)
        add = added(unet, r * n)
        specs = [PromptSwap(w, "target", samples=(b,)) for b, w in enumerate(chunk)]
        x, t = step_inputs(unet, n, size)
        with intervene(unet, specs, encode=encode, cache_kv=cache_kv, cfg=r == 2):
            for _ in range(steps):
                x = update(x, call(unet, torch.cat([x] * r), t, ctx, add))
    sync(device)
    return time.perf_counter() - start


def peak_memory(unet, n: int, size: int, device: str) -> int:
    """Bytes one denoiser step of ``n`` windows (a CFG batch of 2n; a companion row per window
    under joint attention) needs beyond the weights."""
    k = n * (rows(unet) + joint(unet))
    x, t = step_inputs(unet, k, size)
    ctx, add = contexts(unet, k, 0), added(unet, k)
    if not device.startswith("cuda"):
        return peak_bytes(lambda: call(unet, x, t, ctx, add))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        call(unet, x, t, ctx, add)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def attention_backend(name: str):
    """``sdpa_kernel`` for one scaled-dot-product backend, or no restriction (``auto``)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[name]
    return sdpa_kernel(backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", default="sd1")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=64, help="latent side (64 = 512 px for SD)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--m", type=int, default=1, help="window size")
    parser.add_argument("--windows", type=int, default=None, help="limit the number of windows")
    parser.add_argument("--batch", default="auto", help="windows per UNet batch, or auto")
    parser.add_argument("--serial-windows", type=int, default=2, help="timed, then extrapolated")
    parser.add_argument("--peak-tflops", type=float, default=789.0, help="measured bf16 peak")
    parser.add_argument(
        "--attention", default="auto", choices=["auto", "flash", "efficient", "cudnn", "math"]
    )
    parser.add_argument("--channels-last", action="store_true", help="UNet convolutions NHWC")
    parser.add_argument(
        "--compile",
        default="none",
        choices=["none", "default", "reduce-overhead", "max-autotune"],
        help="torch.compile mode (reduce-overhead captures CUDA graphs)",
    )
    parser.add_argument("--memory-share", type=float, default=0.9, help="of free memory, for auto")
    parser.add_argument(
        "--miniature", action="store_true", help="the family's tiny test config (a smoke run)"
    )
    args = parser.parse_args()
    fam = get_family(args.family)
    torch.manual_seed(0)
    with torch.device(args.device):
        unet = build_denoiser(fam, **(fam.miniature if args.miniature else {})).eval()
    wins = windows(len(sites(unet)), args.m)[: args.windows]
    serial = (
        serial_sweep(unet.float(), wins[: args.serial_windows], args.steps, args.size, args.device)
        * len(wins)
        / min(args.serial_windows, len(wins))
    )
    unet = unet.to(torch.bfloat16)
    if args.channels_last and fam.denoiser == "unet":
        unet = unet.to(memory_format=torch.channels_last)
    with attention_backend(args.attention):
        per_batch = {k: peak_memory(unet, k, args.size, args.device) for k in (1, 2)}
        if args.batch == "auto":
            budget = int(args.memory_share * available_bytes(torch.device(args.device)))
            batch = fit_batch(per_batch.__getitem__, budget, len(wins))
        else:
            batch = int(args.batch)
        if args.compile != "none":
            unet = torch.compile(unet, mode=args.compile)
        warm = time.perf_counter()
        batched_sweep(unet, wins[:batch], 1, args.size, batch, args.device)  # warm-up, compile
        warm = time.perf_counter() - warm
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        ours = batched_sweep(unet, wins, args.steps, args.size, batch, args.device)
    peak = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
    x, t = step_inputs(unet, 2 * min(batch, len(wins)), args.size)
    ctx = contexts(unet, x.shape[0], 0)
    with FlopCounterMode(display=False) as counter:
        call(unet, x, t, ctx, added(unet, x.shape[0]))
    per_sample = counter.get_total_flops() / x.shape[0]
    total = per_sample * (rows(unet) + joint(unet)) * len(wins) * args.steps
    floor = total / (args.peak_tflops * 1e12)
    gib = 2**30
    print(
        f"{args.family} {args.size}x{args.size} latent, {len(wins)} windows of {args.m}, "
        f"{args.steps} steps, attention {args.attention}, channels_last {args.channels_last}, "
        f"compile {args.compile}: serial fp32 {serial:.2f} s/sweep (extrapolated from "
        f"{args.serial_windows}), batched bf16 {ours:.2f} s/sweep (batch {batch}, warm-up "
        f"{warm:.1f} s), speedup {serial / ours:.1f}x; {per_sample / 1e12:.2f} TFLOP per "
        f"sample-step, floor at peak {floor:.2f} s, achieved {floor / ours:.2f} of peak; one "
        f"window's step needs {(per_batch[2] - per_batch[1]) / 2**20:.0f} MiB"
        + (f", peak during the sweep {peak / gib:.1f} GiB" if peak else "")
    )


if __name__ == "__main__":
    main()
