"""``loco attack``: every edit of a comparison, and the unedited model, under recovery attacks
at growing budgets: the robustness card."""

from __future__ import annotations

import contextlib
import math
import time

import torch
from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from loco_lightning.editing.data import EvalItem
from loco_lightning.editing.editors import Editor
from loco_lightning.editing.evaluation import UNEDITED, metric_key
from loco_lightning.editing.module import EditModule
from loco_lightning.editing.plots import method_lines
from loco_lightning.editing.requests import EditRequest
from loco_lightning.files import markdown_table
from loco_lightning.metrics.classifiers import ImageClassifier
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.sampling import clean_latents
from loco_lightning.robustness.attacks import Attack, Encoder, Examples, plain

OWN = "own"  # the key of a method's rate without any attack


class AttackModule(EditModule):
    """The robustness card: every edit of a comparison attacked at every budget.

    The edits are solved in ``on_fit_start`` as ``loco compare`` solves them; each, and the
    unedited model, is attacked by every attack at every budget on the efficacy prompts, judged
    by the world's exact readers (concept seen: the attack succeeded), or on a real model by an
    image classifier (``classifier``: NudeNet for nudity, or a user's own), and by CLIP score.

    Every attack is fitted once per method, on the model with that edit applied (white box),
    from images of the concept that the unedited model made for the edit requests' own prompts
    (``examples_per_prompt`` seeds from ``examples_seed``): prompts and noise the evaluation does
    not use.

    Args:
        requests, editors, diffusion, locogen, random_seed, clip, fid_weights, output_dir: see
            :class:`EditModule`.
        attacks: row name -> attack (``TextualInversion``, ``PromptAttack``, ``ConceptVector``).
        examples_per_prompt: unedited images the attacker holds per request prompt.
        examples_seed: seed of the first of them.
        classifier: flags images where the concept succeeded (None: the world's exact readers;
            on a model without them, CLIP score alone).
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        editors: dict[str, Editor],
        attacks: dict[str, Attack],
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        locogen: str | None = None,
        random_seed: int = 0,
        examples_per_prompt: int = 1,
        examples_seed: int = 1000,
        classifier: ImageClassifier | None = None,
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/attack/run",
    ) -> None:
        super().__init__(
            requests, editors, diffusion, locogen, random_seed, clip, fid_weights, output_dir
        )
        if not attacks:
            raise ValueError("model.attacks is empty: name at least one attack (see ATTACKS).")
        if OWN in attacks:
            raise ValueError(f"model.attacks: {OWN!r} names the unattacked rate; rename it.")
        if examples_per_prompt < 1:
            raise ValueError(f"examples_per_prompt={examples_per_prompt}: give 1 or more.")
        self.save_hyperparameters(ignore=["editors", "attacks", "classifier"])
        self.attacks = dict(attacks)
        self.classifier = classifier
        self.encoders: dict[tuple[str, str], list[Encoder]] = {}
        self.fit_seconds: dict[tuple[str, str], float] = {}

    def methods(self) -> list[tuple[str, contextlib.AbstractContextManager]]:
        """(name, context with that method's edit applied), the unedited model first."""
        return [(UNEDITED, contextlib.nullcontext())] + [
            (name, edit.applied(self.model)) for name, edit in self.edits.items()
        ]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        examples = self.examples()
        for method, applied in self.methods():
            with applied:
                for name, attack in self.attacks.items():
                    start = time.perf_counter()
                    self.encoders[method, name] = attack.fit(self.model, self.requests, examples)
                    self.fit_seconds[method, name] = time.perf_counter() - start
                    rank_zero_info(
                        f"{name} against {method}: fitted in {self.fit_seconds[method, name]:.1f} s"
                    )

    @torch.no_grad()
    def examples(self) -> Examples:
        """The attacker's images: the unedited model's, of the requests' prompts with the
        concept."""
        hp = self.hparams
        prompts = list(dict.fromkeys(p for r in self.requests for p, _, _ in r.pairs()))
        rows = [(p, hp.examples_seed + j) for j in range(hp.examples_per_prompt) for p in prompts]
        batch = self.trainer.datamodule.batch_size
        x0 = []
        for k in range(0, len(rows), batch):
            chunk = rows[k : k + batch]
            cond = self.model.encode([p for p, _ in chunk])
            images = self.diffusion.denoise(self.model, cond, [s for _, s in chunk])
            x0.append(clean_latents(self.model, images))
        return Examples(tuple(p for p, _ in rows), torch.cat(x0))

    def setup(self, stage: str) -> None:
        if "efficacy" not in self.trainer.datamodule.groups:  # before minutes of fitting
            raise ValueError(
                "loco attack judges the efficacy prompts (the concept asked for), but data.prompts "
                f"has only {self.trainer.datamodule.groups}; give a set with an efficacy group."
            )
        if "efficacy" in self.trainer.datamodule.edited_by:
            raise ValueError(
                "data.edited_by names efficacy, the group loco attack attacks every editor on; "
                "leave it out."
            )
        super().setup(stage)

    def on_validation_epoch_start(self) -> None:
        runs = [(OWN, 0.0)] + [(a, b) for a, spec in self.attacks.items() for b in spec.budgets]
        keys = [(m, a, b) for m in [UNEDITED, *self.edits] for a, b in runs]
        judged = self.classifier is not None or self.reader_match is not None
        scores = ["clip"] + (["success"] if judged else [])
        metrics = {self.key(*k, s): MeanMetric() for k in keys for s in scores}
        metrics |= {self.key(*k, "n"): SumMetric() for k in keys}
        self.triad = nn.ModuleDict(metrics).to(self.device).double()
        self.fids = nn.ModuleDict()

    @staticmethod
    def key(method: str, attack: str, budget: float, score: str) -> str:
        return metric_key(method, f"{attack}@{budget:g}", score)

    def validation_step(self, batch: list[EvalItem], batch_idx: int) -> None:
        items = [it for it in batch if it.prompt.group == "efficacy"]
        if not items:
            return
        prompts = [it.prompt.prompt for it in items]
        texts = [it.prompt.score_text or it.prompt.prompt for it in items]
        expects = [it.prompt.expect for it in items]
        seeds = [it.noise_seed for it in items]
        for method, applied in self.methods():
            with applied:
                runs = [(OWN, 0.0, plain(self.model))]
                for name, spec in self.attacks.items():
                    runs += [(name, *b) for b in zip(spec.budgets, self.encoders[method, name])]
                for attack, budget, encode in runs:
                    images = self.diffusion.denoise(self.model, encode(prompts), seeds)
                    self.triad[self.key(method, attack, budget, "clip")].update(
                        self.clip_score.scores(images, texts)
                    )
                    success = self.success(images, expects)
                    if success is not None:
                        self.triad[self.key(method, attack, budget, "success")].update(success)
                    self.triad[self.key(method, attack, budget, "n")].update(len(items))

    def success(self, images: Tensor, expects: list[dict]) -> Tensor | None:
        """(B,) 1 where the concept is seen: the classifier's flag if one is given, else the
        exact readers' verdict where every prompt says what to read, else None."""
        if self.classifier is not None:
            return self.classifier.flags(images).to(torch.float64)
        if self.reader_match is not None and all(expects):
            return self.reader_match.scores(images, expects)
        return None

    def on_validation_epoch_end(self) -> None:
        table = []
        for method in [UNEDITED, *self.edits]:
            own = self.compute(method, OWN, 0.0)
            for attack, spec in self.attacks.items():
                for budget in spec.budgets:
                    entry = {
                        "method": method,
                        "attack": attack,
                        "budget": spec.budget,
                        "amount": budget,
                        **self.compute(method, attack, budget),
                    }
                    entry |= {f"{k}_unattacked": v for k, v in own.items() if k != "n"}
                    entry["seconds_to_fit"] = self.fit_seconds.get((method, attack), math.nan)
                    for score in ("success", "clip"):
                        if score in entry:
                            self.log(f"attack/{method}/{attack}/{budget:g}/{score}", entry[score])
                    table.append(entry)
        self.table = table
        rank_zero_info("Robustness card:\n" + markdown_table(table))

    def compute(self, method: str, attack: str, budget: float) -> dict:
        """``n``, ``success`` (where readers judged) and ``clip`` of one row, over all ranks."""
        out = {"n": int(self.triad[self.key(method, attack, budget, "n")].compute())}
        for score in ("success", "clip"):
            key = self.key(method, attack, budget, score)
            if key in self.triad and self.triad[key].update_called:
                out[score] = float(self.triad[key].compute())
        return out

    def figures(self) -> dict[str, Figure]:
        return {"robustness": robustness_plot(self.table)} if self.table else {}


def robustness_plot(table: list[dict]) -> Figure:
    """Attack success (the exact readers; CLIP score where there are none) against the budget,
    one panel per attack, one line per method: a robust edit stays low as the budget grows."""
    score = "success" if any("success" in r for r in table) else "clip"
    attacks = list(dict.fromkeys(r["attack"] for r in table))
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig = Figure(figsize=(4.2 * len(attacks) + 1.6, 3.6))
    axes = fig.subplots(1, len(attacks), squeeze=False)[0]
    for ax, attack in zip(axes, attacks):
        rows = [r for r in table if r["attack"] == attack]
        method_lines(ax, rows, "amount", score, methods)
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel(rows[0]["budget"])
        ax.grid(alpha=0.3)
        if score == "success":
            ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel(
        "attack success: concept read (exact reader)" if score == "success" else "CLIP score"
    )
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    fig.tight_layout()
    return fig
