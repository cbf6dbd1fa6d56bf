"""Concept Ablation (Kumari et al., 2023): make the concept prompt predict what an anchor prompt
predicts, by fine-tuning the cross-attention key/value projections."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from loco_lightning.baselines.finetune import FineTuneEdit, Pair, Trainable
from loco_lightning.editing.requests import EditRequest


class ConceptAblationModule(FineTuneEdit):
    """Concept Ablation, the model-based variant with a frozen anchor.

    For x_t noised from the original model's images of the anchor prompt a (the request's
    target prompt, e.g. "a painting" for "a painting in the style of Van Gogh"):

        loss = ‖ε_θ(x_t, c) − sg(ε*(x_t, a))‖²

    so the concept prompt c comes to produce the anchor's images. Trains the text key/value
    projections (``train: kv``, the paper's cross-attention variant) of every site or the given
    ones.

    Args:
        requests, family, source, dtype, steps, guidance, sites, train, lr, batch_size,
            images_per_prompt, image_steps, seed, clip, fid_weights, output_dir: see
            :class:`FineTuneEdit`.
    """

    method = "ablate"

    def __init__(
        self,
        requests: list[EditRequest] | str,
        family: str = "world",
        source: str | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        steps: int | None = None,
        guidance: float | None = None,
        sites: list[int] | None = None,
        train: Trainable = "kv",
        lr: float = 2e-6,
        batch_size: int = 4,
        images_per_prompt: int = 2,
        image_steps: int | None = None,
        seed: int = 0,
        clip: str = "worldclip",
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/ablate/run",
    ) -> None:
        super().__init__(
            requests, family, source, dtype, steps, guidance, sites, train, lr, batch_size,
            images_per_prompt, image_steps, seed, clip, fid_weights, output_dir,
        )  # fmt: skip
        self.save_hyperparameters()

    def image_prompt(self, pair: Pair) -> str:
        return pair[2]  # the anchor: the concept should come to look like it

    def teacher_target(self, x_t: Tensor, t: Tensor, pairs: list[Pair]) -> Tensor:
        anchor = self.conditioning([a for _, _, a in pairs])
        return self.predict(self.teacher.module, x_t, t, anchor)
