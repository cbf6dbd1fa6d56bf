"""ESD-x (Gandikota et al., 2023): erase a concept by fine-tuning cross-attention with negative
guidance from the frozen original model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from loco_lightning.baselines.finetune import FineTuneModule, Objective, Pair


@dataclass(frozen=True)
class ESD(Objective):
    """ESD-x: the concept prompt's prediction is trained towards negative guidance.

    With the frozen original ε*, for x_t noised from the original model's images of the concept
    prompt c:

        target = ε*(x_t, n) − η (ε*(x_t, c) − ε*(x_t, n)),   loss = ‖ε_θ(x_t, c) − target‖²

    where n is the empty prompt (the published ESD) or, with ``negative: without``, the same
    prompt with the concept's words removed (pushes away from the concept only, not from the
    rest of the prompt's content). ESD-x trains the cross-attention weights only (all of them,
    or the given sites, e.g. the LocoGen window).

    Attributes:
        eta: negative guidance scale η.
        negative: the reference prediction n: ``empty`` (ESD as published) or ``without``.
    """

    name = "esd"
    eta: float = 1.0
    negative: Literal["empty", "without"] = "empty"

    def image_prompt(self, pair: Pair) -> str:
        return pair[0]  # the concept prompt: ESD erases what the model draws for it

    def teacher_target(
        self, module: FineTuneModule, x_t: Tensor, t: Tensor, pairs: list[Pair]
    ) -> Tensor:
        neutral = [("" if self.negative == "empty" else w) for _, w, _ in pairs]
        both = module.teacher_predict(
            torch.cat([x_t, x_t]), torch.cat([t, t]), [c for c, _, _ in pairs] + neutral
        )
        e_c, e_n = both.chunk(2)
        return e_n - self.eta * (e_c - e_n)
