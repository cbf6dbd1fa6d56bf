"""One comparison: LocoEdit, LocoEdit on all sites, Diff-QuickFix and the trained fine-tuning
baselines, evaluated with the unedited model on the same prompts and seeds."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure

from loco_lightning.baselines.plots import efficacy_specificity, time_to_edit
from loco_lightning.baselines.quickfix import CLIP_LAYER0_OUT, QuickFixParams, timed_quickfix
from loco_lightning.editing.locoedit import load_delta, read_delta
from loco_lightning.editing.module import ClosedFormEditModule, SiteChoice
from loco_lightning.editing.requests import EditRequest, KeyTokens, edit_requests, preserve_prompts
from loco_lightning.models.diffusion import Diffusion


class CompareModule(ClosedFormEditModule):
    """Every editing method side by side, in one table and two figures.

    The closed forms are solved inline in ``on_fit_start`` (LocoEdit for each site choice, and
    Diff-QuickFix with the same requests, key tokens and preserve set, so the two differ only in
    the weight they edit); the fine-tuning baselines are trained first with their own ``fit``
    runs and loaded here from their saved deltas, with their training time.

    Args:
        requests: what to edit, inline or the path of an ``*.edit.yaml`` prompt set.
        preserve: prompts whose outputs must not move, inline or an ``*.edit.yaml`` path.
        quickfix: also evaluate Diff-QuickFix.
        quickfix_lambda: its ridge strength.
        quickfix_layer: the text-encoder layer it edits.
        baselines: method name -> delta file of a trained baseline (``<output_dir>/esd.safetensors``
            of a ``loco esd`` run, …).
        diffusion, site_choices, sites, locogen, lambda_k, lambda_v, key_tokens, preserve_scale,
            edit_k, edit_v, random_seed, clip, fid_weights, output_dir: see
            :class:`ClosedFormEditModule`.
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        site_choices: list[SiteChoice] = ["locogen", "all"],  # noqa: B006
        sites: list[int] | None = None,
        locogen: str | None = None,
        lambda_k: float = 0.01,
        lambda_v: float = 0.01,
        key_tokens: KeyTokens = "last_subject",
        preserve: list[str] | str = [],  # noqa: B006
        preserve_scale: float = 1.0,
        edit_k: bool = True,
        edit_v: bool = True,
        random_seed: int = 0,
        quickfix: bool = True,
        quickfix_lambda: float = 0.01,
        quickfix_layer: str = CLIP_LAYER0_OUT,
        baselines: dict[str, str] = {},  # noqa: B006
        clip: str = "worldclip",
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/compare/run",
    ) -> None:
        requests = edit_requests(requests)  # resolved before the hyperparameters are saved
        preserve = preserve_prompts(preserve)
        super().__init__(
            requests, diffusion, site_choices, sites, locogen,
            lambda_k, lambda_v, key_tokens, preserve, preserve_scale, edit_k, edit_v, random_seed,
            clip, fid_weights, output_dir,
        )  # fmt: skip
        self.save_hyperparameters()
        # LightningCLI records the values as given (a file path); the solves read the prompts
        self.hparams["preserve"] = preserve

    def setup(self, stage: str) -> None:
        missing = {n: p for n, p in self.hparams.baselines.items() if not Path(p).exists()}
        if missing:  # before minutes of solving and generating
            raise FileNotFoundError(
                f"Baseline deltas {missing} do not exist: train them first (`loco esd --config "
                "configs/esd/world_style.yaml`, `loco ablate --config …`; see the compare "
                "config's header) or drop them from model.baselines."
            )
        super().setup(stage)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # LocoEdit for each site choice
        hp = self.hparams
        if hp.quickfix:
            params = QuickFixParams(
                hp.quickfix_layer, hp.quickfix_lambda, hp.key_tokens, tuple(hp.preserve)
            )
            self.edits["quickfix"] = timed_quickfix(self.model, self.requests, params)
        for name, path in hp.baselines.items():
            _, metadata, component = read_delta(path)
            made_for = metadata.get("family", self.model.family.name)
            if made_for != self.model.family.name:
                raise ValueError(
                    f"{path} was trained on family {made_for!r}, this comparison runs "
                    f"{self.model.family.name!r}; train the baseline on the same model."
                )
            root = self.model.component(component)
            edit = load_delta(root, path)
            edit.undo(root)  # the harness applies each edit in turn
            self.edits[name] = edit
            rank_zero_info(
                f"{name}: {len(edit.deltas)} trained tensors from {path}, "
                f"{metadata.get('steps', '?')} steps, {metadata.get('seconds', float('nan')):.1f} s"
            )

    def figures(self) -> dict[str, Figure]:
        """The comparison's figures, by file name."""
        if not self.table:
            return {}
        return {
            "efficacy_specificity": efficacy_specificity(self.table),
            "time_to_edit": time_to_edit(self.table),
        }
