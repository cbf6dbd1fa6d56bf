"""Concept Ablation (Kumari et al., 2023): make the concept prompt predict what an anchor prompt
predicts, by fine-tuning the cross-attention key/value projections."""

from __future__ import annotations

from torch import Tensor

from loco_lightning.baselines.finetune import FineTune, FineTuneEdit, Pair
from loco_lightning.editing.requests import EditRequest
from loco_lightning.models.diffusion import Diffusion


class ConceptAblationModule(FineTuneEdit):
    """Concept Ablation, the model-based variant with a frozen anchor.

    For x_t noised from the original model's images of the anchor prompt a (the request's
    target prompt, e.g. "a painting" for "a painting in the style of Van Gogh"):

        loss = ‖ε_θ(x_t, c) − sg(ε*(x_t, a))‖²

    so the concept prompt c comes to produce the anchor's images. Trains the text key/value
    projections (``train: kv``, the paper's cross-attention variant) of every site or the given
    ones.

    Args:
        requests, diffusion, tuning, clip, fid_weights, output_dir: see :class:`FineTuneEdit`;
            ``tuning`` defaults to the text key/value projections at a small learning rate.
    """

    method = "ablate"

    def __init__(
        self,
        requests: list[EditRequest] | str,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        tuning: FineTune = FineTune(train="kv", lr=2e-6),  # noqa: B008 (frozen)
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/ablate/run",
    ) -> None:
        super().__init__(requests, diffusion, tuning, clip, fid_weights, output_dir)
        self.save_hyperparameters()

    def image_prompt(self, pair: Pair) -> str:
        return pair[2]  # the anchor: the concept should come to look like it

    def teacher_target(self, x_t: Tensor, t: Tensor, pairs: list[Pair]) -> Tensor:
        anchor = self.conditioning([a for _, _, a in pairs])
        return self.predict(self.teacher.module, x_t, t, anchor)
