"""Causal tracing, the older localizer (Diff-QuickFix), as a baseline for LocoGen.

Clean run; corrupted run with Gaussian noise on the concept tokens' input embeddings; restored
runs that copy one layer's clean output into the corrupted run, for every UNet layer (ResNet,
self-attention, cross-attention, feed-forward; at every denoising step) and every text-encoder
layer (at the concept's last token). A layer matters if restoring it brings the score back.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from loco_lightning.hooks.patching import Patch, patch_outputs, record_outputs
from loco_lightning.hooks.sites import execution_order
from loco_lightning.localization.base import Localizer
from loco_lightning.localization.data import TraceItem
from loco_lightning.localization.plots import layer_bars
from loco_lightning.localization.results import aggregate
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.tokenizers import concept_positions

UNET_KINDS = {"ResnetBlock2D": "resnet", "FeedForward": "ff"}
TEXT_KINDS = {
    "CLIPAttention": "text_self_attn",
    "CLIPMLP": "text_mlp",
    "T5LayerSelfAttention": "text_self_attn",
    "T5LayerFF": "text_mlp",
}


def unet_layers(unet: nn.Module) -> list[tuple[str, str]]:
    """(path, kind) of every ResNet, self-/cross-attention and feed-forward, in execution order."""
    kinds = {}
    for name, m in unet.named_modules():
        cls = type(m).__name__
        if cls in UNET_KINDS:
            kinds[m] = (name, UNET_KINDS[cls])
        elif cls == "Attention":
            cross = getattr(m, "is_cross_attention", False) or m.added_kv_proj_dim is not None
            kinds[m] = (name, "cross_attn" if cross else "self_attn")
    return [kinds[m] for m in execution_order(unet, kinds)]


def text_layers(pipeline, components: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(component, path, kind) of every text-encoder self-attention and MLP, in order."""
    return [
        (c, name, TEXT_KINDS[type(m).__name__])
        for c in components
        for name, m in getattr(pipeline, c).named_modules()
        if type(m).__name__ in TEXT_KINDS
    ]


class CausalTracingModule(Localizer):
    """Causal tracing over every UNet and text-encoder layer, one validation step per trace.

    Args:
        diffusion, clip, output_dir: as for LocoGen.
        noise_scale: corruption noise, in standard deviations of the token embedding matrix.
        noise_seed: seed of the corruption noise (the same noise for every restored run).
        chunk: restored runs per UNet batch.
        text_tokens: text-encoder restoration at the concept's ``last`` token or ``all`` of them.
    """

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        clip: str | None = None,
        noise_scale: float = 3.0,
        noise_seed: int = 0,
        chunk: int = 16,
        text_tokens: Literal["last", "all"] = "last",
        output_dir: str = "lightning_logs/causal/run",
    ) -> None:
        if not (math.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(
                f"model.noise_scale={noise_scale}: give a finite multiple >= 0 of the embeddings' "
                "spread (3.0 is the reference's; 0 corrupts nothing, a control)."
            )
        if chunk < 1:
            raise ValueError(f"model.chunk={chunk}: give at least 1 layer per batch.")
        super().__init__(diffusion, clip, output_dir)
        self.save_hyperparameters()
        self.table_name = "layers"

    def _encode(self, prompts: list[str], tokens: dict[str, list[int]], patches=None):
        """Encode with noise on the concept tokens' input embeddings (``tokens``: per text
        encoder, as its own tokenizer places them).

        ``patches`` maps a text-encoder component to its :func:`patch_outputs` patches.
        """
        pipe = self.model.pipeline
        handles = []
        for c in self.model.family.text_encoders:
            emb = getattr(pipe, c).get_input_embeddings()
            g = torch.Generator().manual_seed(self.hparams.noise_seed)
            noise = torch.randn(len(tokens[c]), emb.weight.shape[1], generator=g)
            noise = (noise * self.hparams.noise_scale * emb.weight.std().item()).to(emb.weight)

            def corrupt(module, args, out, noise=noise, at=tokens[c]):
                out = out.clone()
                out[:, at] += noise
                return out

            handles.append(emb.register_forward_hook(corrupt))
        try:
            with ExitStack() as stack:
                for c, patch in (patches or {}).items():
                    stack.enter_context(patch_outputs(getattr(pipe, c), patch, cfg=False))
                return self.model.encode(prompts)
        finally:
            for h in handles:
                h.remove()

    def trace(self, item: TraceItem) -> list[dict]:
        """All rows of one trace: clean, corrupted, then one per restored layer."""
        hp, model, pipe = self.hparams, self.model, self.model.pipeline
        guidance, seed, generate = self.guidance, item.seed, self.diffusion.denoise
        original = item.pair.original
        tokens = {  # SD3's T5 places words otherwise than its CLIPs
            c: concept_positions(
                model.encoder_tokens(c.replace("text_encoder", "tokenizer")),
                original,
                item.pair.target,
            )
            for c in model.family.text_encoders
        }
        layers = unet_layers(model.denoiser)
        texts = text_layers(pipe, model.family.text_encoders)
        text_paths = {c: [p for cc, p, _ in texts if cc == c] for c in model.family.text_encoders}

        with torch.no_grad(), ExitStack() as stack:
            records = {
                c: stack.enter_context(record_outputs(getattr(pipe, c), ps))
                for c, ps in text_paths.items()
            }
            unet_rec = stack.enter_context(record_outputs(model.denoiser, [p for p, _ in layers]))
            clean_cond = model.encode([original])
            clean = generate(model, clean_cond, [seed])
        with torch.no_grad():
            corrupt_cond = self._encode([original], tokens)
            corrupted = generate(model, corrupt_cond, [seed])

            images, names = [clean, corrupted], [("clean", "reference"), ("corrupted", "reference")]
            cond_row = 1 if model.guided(guidance) else 0  # the clean run's conditional row
            for i in range(0, len(layers), hp.chunk):
                chunk = layers[i : i + hp.chunk]
                patches = {}
                for b, (path, _) in enumerate(chunk):
                    values = [v[cond_row : cond_row + 1] for v in unet_rec[path]]
                    patches.setdefault(path, []).append(Patch((b,), values))
                cond = corrupt_cond.expand(len(chunk))
                with patch_outputs(model.denoiser, patches, cfg=model.guided(guidance)):
                    images.append(generate(model, cond, [seed] * len(chunk)))
                names += chunk
            patches: dict[str, dict[str, list[Patch]]] = {}
            for b, (c, path, kind) in enumerate(texts):  # row b restores text layer b
                token_sel = tuple(tokens[c][-1:] if hp.text_tokens == "last" else tokens[c])
                patch = Patch((b,), records[c][path][:1], token_sel)
                patches.setdefault(c, {}).setdefault(path, []).append(patch)
                names.append((f"{c}.{path}", kind))
            cond = self._encode([original] * len(texts), tokens, patches)
            images.append(generate(model, cond, [seed] * len(texts)))
        images = torch.cat(images)
        clip, reader = self.scores(
            images, [original] * len(images), [item.pair.expect] * len(images)
        )
        s_clean, s_corrupt = clip[0], clip[1]
        gap = s_clean - s_corrupt
        return [
            {
                "key": f"{item.key}:{layer}",
                "item": item.key,
                "order": order - 2,
                "layer": layer,
                "kind": kind,
                "pair": item.pair_index,
                "seed": seed,
                "clip": c,
                "reader": r,
                "recovery": (c - s_corrupt) / gap if abs(gap) > 1e-6 else None,
            }
            for order, ((layer, kind), c, r) in enumerate(zip(names, clip, reader))
        ]

    def validation_step(self, batch: list[TraceItem], batch_idx: int) -> None:
        for item in batch:
            self.store.append(self.trace(item), self.global_rank)

    def on_validation_epoch_end(self) -> None:
        self.trainer.strategy.barrier()
        self.table = aggregate(
            self.store.rows(), ("clip", "reader", "recovery"), by=("order", "layer"), keep=("kind",)
        )
        layers = [r for r in self.table if r["order"] >= 0 and "recovery_mean" in r]
        if layers:
            top = sorted(layers, key=lambda r: -r["recovery_mean"])[:5]
            rank_zero_info(
                "Causal tracing: layers whose clean output restores the most: "
                + ", ".join(f"{r['layer']} ({r['kind']}, {r['recovery_mean']:.2f})" for r in top)
            )

    def figures(self) -> dict:
        layers = [r for r in self.table if r["order"] >= 0]
        value = "recovery" if any("recovery_mean" in r for r in layers) else "clip"
        return {f"layers_{value}": layer_bars(layers, value, f"causal tracing: {value} per layer")}
