"""Reproducible training of the shape/style reader CNN shipped as `reader_weights.safetensors`.

Run `python -m loco_lightning.data.world.reader_training` (at 1 thread, deterministic for a seed
on a given torch build) to regenerate the packaged weights and their `reader_weights.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from loco_lightning.data.world.readers import READER_WEIGHTS, AttributeReader, ShapeStyleNet
from loco_lightning.data.world.render import render, sample_scene
from loco_lightning.data.world.vocab import ATTRIBUTES, Vocabulary, default_vocabulary

log = logging.getLogger(__name__)
_BLUR = torch.tensor([1.0, 2.0, 1.0]).outer(torch.tensor([1.0, 2.0, 1.0])) / 16.0


def render_batch(
    n: int, rng: np.random.Generator, vocab: Vocabulary, jitter: float = 1.0, size: int = 16
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`n` random renders: (n, 3, size, size) uint8 images and their attribute indices."""
    scenes = [sample_scene(rng, vocab, jitter) for _ in range(n)]
    images = torch.from_numpy(np.stack([render(s, size, vocab) for s in scenes]))
    labels = {a: torch.tensor([vocab.index(a, getattr(s, a)) for s in scenes]) for a in ATTRIBUTES}
    return images.permute(0, 3, 1, 2).contiguous(), labels


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Degrade uint8 renders the way a small diffusion model does; returns floats in [-1, 1].

    Half the batch is blurred by a random amount; every image gets a random brightness, colour
    cast and Gaussian noise (sigma up to 0.12 in [-1, 1] units).
    """
    b = images.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=gen)

    x = images.float() / 255.0
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), _BLUR.expand(3, 1, 3, 3), groups=3)
    amount = u(0, 1, 1, 1, 1) * (torch.rand(b, 1, 1, 1, generator=gen) < 0.5)
    x = x + amount * (blurred - x)
    x = x * u(0.7, 1.15, 1, 1, 1) * u(0.85, 1.15, 3, 1, 1)
    x = x + u(0.0, 0.06, 1, 1, 1) * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1) * 2.0 - 1.0


def train_shape_style_net(
    steps: int = 2000,
    seed: int = 0,
    batch_size: int = 128,
    pool_size: int = 20_000,
    lr: float = 3e-3,
    jitter: float = 2.0,
    vocab: Vocabulary | None = None,
) -> ShapeStyleNet:
    """Train the reader CNN on a fixed pool of renders with fresh augmentation every step.

    The pool uses twice the dataset's pose jitter so generated images slightly off the canonical
    pose are still read correctly. AdamW with a cosine decay; deterministic for (seed, steps).
    """
    vocab = vocab or default_vocabulary()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = render_batch(pool_size, np.random.default_rng(seed), vocab, jitter)
    net = ShapeStyleNet(len(vocab.shapes), len(vocab.styles))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(pool_size, (batch_size,), generator=gen)
        shape_logits, style_logits = net(augment(images[idx], gen))
        loss = F.cross_entropy(shape_logits, labels["shape"][idx])
        loss = loss + F.cross_entropy(style_logits, labels["style"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("step %d loss %.4f (%.0f s)", step, loss.item(), time.perf_counter() - start)
    return net.eval()


def reader_accuracy(
    reader: AttributeReader,
    n: int = 600,
    seed: int = 12345,
    jitter: float = 1.0,
    noisy: bool = False,
) -> dict[str, float]:
    """Per-attribute accuracy of `reader` on `n` fresh renders (optionally augmented)."""
    images, labels = render_batch(n, np.random.default_rng(seed), reader.vocab, jitter)
    if noisy:
        x = augment(images, torch.Generator().manual_seed(seed))
    else:
        x = images.float() / 127.5 - 1.0
    read = reader.read(x)
    return {a: round((read[a] == labels[a]).float().mean().item(), 4) for a in ATTRIBUTES}


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()}


def main(argv: list[str] | None = None) -> None:
    """Retrain the reader and write the weights plus a json record of how they were made."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=READER_WEIGHTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    vocab = default_vocabulary()
    start = time.perf_counter()
    net = train_shape_style_net(steps=args.steps, seed=args.seed, vocab=vocab)
    seconds = time.perf_counter() - start
    meta = {"shapes": ",".join(vocab.shapes), "styles": ",".join(vocab.styles)}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.out, meta)
    reader = AttributeReader(vocab, args.out)
    command = ["python", "-m", __spec__.name if __spec__ else __name__]
    record = {
        "command": " ".join(command + (sys.argv[1:] if argv is None else argv)),
        "seed": args.seed,
        "steps": args.steps,
        "threads": args.threads,
        "defaults": {k: v for k, v in _defaults(train_shape_style_net).items() if k != "vocab"},
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in net.parameters()),
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "accuracy_clean": reader_accuracy(reader),  # 600 renders, seed 12345
        "accuracy_noisy": reader_accuracy(reader, noisy=True),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s: %s", args.out, record)


if __name__ == "__main__":
    main()
