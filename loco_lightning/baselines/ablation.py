"""Concept Ablation (Kumari et al., 2023): make the concept prompt predict what an anchor prompt
predicts, by fine-tuning the cross-attention key/value projections."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from loco_lightning.baselines.finetune import FineTune, FineTuneModule, Objective, Pair


@dataclass(frozen=True)
class ConceptAblation(Objective):
    """Concept Ablation, the model-based variant with a frozen anchor.

    For x_t noised from the original model's images of the anchor prompt a (the request's
    target prompt, e.g. "a painting" for "a painting in the style of Van Gogh"):

        loss = ‖ε_θ(x_t, c) − sg(ε*(x_t, a))‖²

    so the concept prompt c comes to produce the anchor's images. By default it trains the text
    key/value projections (``train: kv``, the paper's cross-attention variant) at a small
    learning rate, of every site or the given ones.
    """

    name = "ablate"
    tuning = FineTune(train="kv", lr=2e-6)

    def image_prompt(self, pair: Pair) -> str:
        return pair[2]  # the anchor: the concept should come to look like it

    def teacher_target(
        self, module: FineTuneModule, x_t: Tensor, t: Tensor, pairs: list[Pair]
    ) -> Tensor:
        return module.teacher_predict(x_t, t, [a for _, _, a in pairs])
