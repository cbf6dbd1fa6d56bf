"""ESD-x (Gandikota et al., 2023): erase a concept by fine-tuning cross-attention with negative
guidance from the frozen original model."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from loco_lightning.baselines.finetune import FineTune, FineTuneEdit, Pair
from loco_lightning.editing.requests import EditRequest
from loco_lightning.models.diffusion import Diffusion


class ESDModule(FineTuneEdit):
    """ESD-x: the concept prompt's prediction is trained towards negative guidance.

    With the frozen original ε*, for x_t noised from the original model's images of the concept
    prompt c:

        target = ε*(x_t, n) − η (ε*(x_t, c) − ε*(x_t, n)),   loss = ‖ε_θ(x_t, c) − target‖²

    where n is the empty prompt (the published ESD) or, with ``negative: without``, the same
    prompt with the concept's words removed (pushes away from the concept only, not from the
    rest of the prompt's content). ESD-x trains the cross-attention weights only (all of them,
    or the given sites, e.g. the LocoGen window).

    Args:
        eta: negative guidance scale η.
        negative: the reference prediction n: ``empty`` (ESD as published) or ``without``.
        requests, diffusion, tuning, clip, fid_weights, output_dir: see :class:`FineTuneEdit`.
    """

    method = "esd"

    def __init__(
        self,
        requests: list[EditRequest] | str,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        tuning: FineTune = FineTune(),  # noqa: B008 (frozen)
        eta: float = 1.0,
        negative: Literal["empty", "without"] = "empty",
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/esd/run",
    ) -> None:
        super().__init__(requests, diffusion, tuning, clip, fid_weights, output_dir)
        self.save_hyperparameters()

    def image_prompt(self, pair: Pair) -> str:
        return pair[0]  # the concept prompt: ESD erases what the model draws for it

    def teacher_target(self, x_t: Tensor, t: Tensor, pairs: list[Pair]) -> Tensor:
        hp = self.hparams
        neutral = [("" if hp.negative == "empty" else w) for _, w, _ in pairs]
        cond = self.conditioning([c for c, _, _ in pairs]).cat(self.conditioning(neutral))
        both = self.predict(self.teacher.module, torch.cat([x_t, x_t]), torch.cat([t, t]), cond)
        e_c, e_n = both.chunk(2)
        return e_n - hp.eta * (e_c - e_n)

    def edit_result(self):
        result = super().edit_result()
        result.metadata.update(eta=self.hparams.eta, negative=self.hparams.negative)
        return result
