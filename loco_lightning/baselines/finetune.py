"""What every fine-tuning baseline shares: a frozen teacher, deterministic batches, the edit view.

ESD-x and Concept Ablation both fine-tune cross-attention weights of the UNet towards outputs of a
frozen copy of the original UNet, on noised images the original model generated. They differ only
in which images are noised and what the teacher's target is: an :class:`Objective`, given to the
one :class:`FineTuneModule` as data. To the evaluation harness a trained baseline is an ordinary
:class:`WeightEdit` (delta = trained - original weights), so it is scored and saved exactly like
LocoEdit, and joins a comparison as a ``Saved`` editor.
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from loco_lightning.editing.edits import WeightEdit, digest
from loco_lightning.editing.evaluation import EditEvaluation
from loco_lightning.editing.requests import EditRequest, edit_requests
from loco_lightning.hooks import sites as all_sites
from loco_lightning.hooks.denoisers import kind_of
from loco_lightning.hooks.executor import check_sites
from loco_lightning.models import Conditioning
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.models.sampling import clean_latents
from loco_lightning.models.schedulers import predicts_flow

Trainable = Literal["attention", "kv"]
Pair = tuple[str, str, str]  # (prompt with the concept, same without it, target prompt)


class Frozen:
    """Holds a module outside the LightningModule's tree: not trained, not in the checkpoint."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval().requires_grad_(False)


@dataclass(frozen=True)
class FineTune:
    """How a fine-tuning baseline trains (``model.tuning`` in its YAML).

    Attributes:
        sites: site indices whose cross-attention is trained (None: every site; e.g. the LocoGen
            window).
        train: ``attention`` (every weight of the site's attention: q, k, v, out) or ``kv``
            (the text key/value projections only).
        lr: Adam learning rate.
        batch_size: training samples per step (also the batch of the training-image generation).
        images_per_prompt: training images the original model generates per prompt.
        image_steps: denoising steps of the training images (None: ``diffusion.steps``).
        seed: seed of the training images and of every step's batch.
    """

    sites: list[int] | None = None
    train: Trainable = "attention"
    lr: float = 1e-5
    batch_size: int = 4
    images_per_prompt: int = 2
    image_steps: int | None = None
    seed: int = 0


class Objective(ABC):
    """What a fine-tuning baseline trains towards (ESD-x, Concept Ablation, …), as data.

    Subclasses are frozen dataclasses with a ``name`` (the row and file name of the edit).
    """

    name: ClassVar[str]
    tuning: ClassVar[FineTune] = FineTune()  # what is trained, unless a config says

    @abstractmethod
    def image_prompt(self, pair: Pair) -> str:
        """The prompt whose original-model images are noised for ``pair``'s training samples."""

    @abstractmethod
    def teacher_target(
        self, module: FineTuneModule, x_t: Tensor, t: Tensor, pairs: list[Pair]
    ) -> Tensor:
        """What the trained UNet should output for ``x_t`` under the concept prompts (no grad;
        ``module.teacher_predict`` gives the frozen original's predictions)."""

    def describe(self) -> dict:
        """What the trained edit records about the objective."""
        return asdict(self)


class FineTuneModule(EditEvaluation):
    """A fine-tuning baseline, trained with ``fit`` and evaluated like any edit.

    The UNet being trained is registered as ``self.unet`` so its trained weights are in the
    checkpoint (only the trainable ones are kept there: the rest is the original model); the
    frozen original is held outside the module tree. Step ``s`` draws its batch from
    ``seed + s`` alone, so a run resumed from a checkpoint continues exactly.

    Args:
        requests: what to remove, inline or the path of an ``*.edit.yaml`` prompt set; each
            template gives a (concept prompt, anchor/target prompt) pair, as for LocoEdit.
        objective: what it trains towards (``ESD``, ``ConceptAblation``).
        diffusion, clip, fid_weights, output_dir: see :class:`EditEvaluation`.
        tuning: what is trained and how (:class:`FineTune`; None: the objective's default).
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        objective: Objective,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        tuning: FineTune | None = None,
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/finetune/run",
    ) -> None:
        super().__init__(diffusion, clip, fid_weights, output_dir)
        self.save_hyperparameters(ignore=["objective"])
        self.objective = objective
        self.method = objective.name
        self.tuning = tuning or objective.tuning
        self.requests = edit_requests(requests)
        if not self.requests:
            raise ValueError("No edit requests: give at least one {concept, target}.")
        self.pairs: list[Pair] = [p for r in self.requests for p in r.pairs()]
        self.trainable: list[str] = []
        self._trained: dict[str, Tensor] | None = None  # set aside while the UNet is original
        self.seconds = 0.0  # time to edit: training images + optimisation, summed over resumes
        self.strict_loading = False  # checkpoints hold the trainable weights only
        self.automatic_optimization = True  # these do train

    # ---- construction ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.model is not None:
            return
        for name in ("max_steps", "max_epochs"):
            if stage == "fit" and self._trainer and getattr(self._trainer, name) == 0:
                raise ValueError(
                    f"trainer.{name}=0 trains nothing; give a number of steps (-1 or leave it "
                    "out for the config's)."
                )
        super().setup(stage)
        self.unet = self.model.denoiser  # registered: the checkpoint holds what is trained
        self.teacher = Frozen(copy.deepcopy(self.unet))
        self.trainable = self.trainable_names()
        wanted = set(self.trainable)
        for name, param in self.unet.named_parameters():
            param.requires_grad_(name in wanted)
        frozen = dict(self.teacher.module.named_parameters())
        self.originals = {n: frozen[n] for n in self.trainable}

    def trainable_names(self) -> list[str]:
        """Parameter names (inside the UNet) this baseline trains."""
        hp = self.tuning
        found = all_sites(self.unet)
        chosen = range(len(found)) if hp.sites is None else hp.sites
        check_sites(found, list(chosen), f"{self.method} sites")
        names = []
        for index in chosen:
            site = found[index]
            attn = self.unet.get_submodule(site.path)
            parts = [""] if hp.train == "attention" else [site.key_name, site.value_name]
            for part in parts:
                module = attn.get_submodule(part) if part else attn
                prefix = ".".join(p for p in (site.path, part) if p)
                names += [f"{prefix}.{n}" for n, _ in module.named_parameters()]
        return names

    def configure_optimizers(self):
        params = [p for p in self.unet.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.tuning.lr)

    def on_fit_start(self) -> None:
        # setup ran before Lightning moved the module; the pipeline is not a registered child
        self.model.pipeline.to(self.device)
        self.teacher.module.to(self.device)
        start = time.perf_counter()
        # the text encoder is not trained; "" is guidance's empty prompt, as the pipeline encodes it
        prompts = list(dict.fromkeys(p for pair in self.pairs for p in pair if p))
        self.bank = self.model.encode(prompts).cat(self.model.empty())
        self.bank_rows = {p: i for i, p in enumerate([*prompts, ""])}
        if predicts_flow(self.model.pipeline.scheduler):
            raise ValueError(
                f"{self.method} fine-tunes with DDPM noising, but this "
                f"{self.model.family.name} model is a flow-matching one (its scheduler "
                f"{type(self.model.pipeline.scheduler).__name__} predicts flow); fine-tuning "
                "baselines are not supported on it yet. Compare closed-form editors instead."
            )
        self.noise = DDPMScheduler.from_config(self.model.pipeline.scheduler.config)
        prompts_of = [self.objective.image_prompt(p) for p in self.pairs]
        shown = list(dict.fromkeys(prompts_of))
        self.image_rows = torch.tensor([shown.index(p) for p in prompts_of])
        with self.original_weights():
            self.x0 = self.clean_samples(shown)  # (len(shown) * images_per_prompt, C, H, W)
        self.seconds += time.perf_counter() - start
        rank_zero_info(
            f"{self.method}: {len(self.x0)} training images of {len(shown)} prompts in "
            f"{time.perf_counter() - start:.1f} s; training {len(self.trainable)} tensors"
        )

    # ---- pieces ---------------------------------------------------------------------------------
    @contextmanager
    def original_weights(self) -> Iterator[None]:
        """The UNet with its original weights inside the block, its trained ones after it."""
        params = dict(self.unet.named_parameters())
        trained = {n: params[n].detach().clone() for n in self.trainable}
        with torch.no_grad():
            for n in self.trainable:
                params[n].copy_(self.originals[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n in self.trainable:
                    params[n].copy_(trained[n])

    @torch.no_grad()
    def clean_samples(self, prompts: list[str]) -> Tensor:
        """x_0 of the current model's images of ``prompts``: pixels in [-1, 1] or VAE latents."""
        hp = self.tuning
        rows = [(p, hp.seed + j) for p in prompts for j in range(hp.images_per_prompt)]
        sampler = replace(self.diffusion, steps=hp.image_steps or self.diffusion.steps)
        out = []
        for k in range(0, len(rows), hp.batch_size):
            chunk = rows[k : k + hp.batch_size]
            cond = self.model.encode([p for p, _ in chunk])
            out.append(sampler.denoise(self.model, cond, [s for _, s in chunk]))
        return clean_latents(self.model, torch.cat(out)).to(self.unet.dtype)

    def conditioning(self, prompts: list[str]) -> Conditioning:
        """Rows of the precomputed text conditioning for these prompts."""
        idx = torch.tensor([self.bank_rows[p] for p in prompts], device=self.bank.context.device)
        return self.bank.rows(idx)

    @staticmethod
    def predict(unet: nn.Module, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """The denoiser's noise (or v) prediction, without a learned variance (IF, PixArt)."""
        out = kind_of(unet).forward(unet, x_t, t, cond.context, cond.added, cond.mask)
        return out[:, : x_t.shape[1]]

    def teacher_predict(self, x_t: Tensor, t: Tensor, prompts: list[str]) -> Tensor:
        """The frozen original's prediction for ``x_t`` under precomputed ``prompts``."""
        return self.predict(self.teacher.module, x_t, t, self.conditioning(prompts))

    def batch(self, step: int) -> tuple[Tensor, Tensor, list[Pair]]:
        """(x_t, t, pairs) of optimisation step ``step``, drawn from ``seed + step`` alone."""
        hp = self.tuning
        g = torch.Generator().manual_seed(hp.seed + step)
        pick = torch.randint(len(self.pairs), (hp.batch_size,), generator=g)
        which = torch.randint(hp.images_per_prompt, (hp.batch_size,), generator=g)
        t = torch.randint(self.noise.config.num_train_timesteps, (hp.batch_size,), generator=g)
        noise = torch.randn((hp.batch_size, *self.x0.shape[1:]), generator=g)
        x0 = self.x0[(self.image_rows[pick] * hp.images_per_prompt + which).to(self.device)]
        t = t.to(self.device)
        x_t = self.noise.add_noise(x0, noise.to(x0), t)
        return x_t, t, [self.pairs[i] for i in pick.tolist()]

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x_t, t, pairs = self.batch(self.global_step)
        with torch.no_grad():
            target = self.objective.teacher_target(self, x_t, t, pairs)
        pred = self.predict(self.unet, x_t, t, self.conditioning([p[0] for p in pairs]))
        loss = F.mse_loss(pred.float(), target.float())
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.restore_trained()
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.seconds += time.perf_counter() - self._step_start
        if 0 < self.trainer.max_steps <= self.global_step:
            # a run shorter than the epoch (data.train_steps) stops here; asking to stop makes
            # Lightning validate this step first, so the delta and the table are written
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trained = self.trained_weights()
        checkpoint["state_dict"] = {f"unet.{n}": trained[n] for n in self.trainable}
        checkpoint["seconds_to_edit"] = self.seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = [n for n in self.trainable if f"unet.{n}" not in checkpoint["state_dict"]]
        if missing:
            raise KeyError(
                f"The checkpoint lacks trained weights {missing[:3]} (of {len(missing)}): it was "
                f"made with other sites or another `train` setting than this {self.method} run."
            )
        self.seconds = checkpoint.get("seconds_to_edit", 0.0)

    # ---- evaluation: the trained weights as an edit ---------------------------------------------
    def trained_weights(self) -> dict[str, Tensor]:
        """The trained weights, wherever they are (in the UNet, or set aside by validation)."""
        if self._trained is not None:
            return self._trained
        params = dict(self.unet.named_parameters())
        return {n: params[n].detach() for n in self.trainable}

    def restore_trained(self) -> None:
        """The trained weights back in the UNet (bit for bit), before the next step."""
        if self._trained is None:
            return
        params = dict(self.unet.named_parameters())
        with torch.no_grad():
            for n, w in self._trained.items():
                params[n].copy_(w)
        self._trained = None

    def edit_result(self) -> WeightEdit:
        """The training so far as an edit: delta = trained - original weights."""
        trained = self.trained_weights()
        deltas = {
            n: (trained[n].float() - self.originals[n].float()).to(trained[n].dtype)
            for n in self.trainable
        }
        hp = self.tuning
        metadata = {
            "method": self.method,
            "objective": self.objective.describe(),
            "family": self.model.family.name,
            "requests": [asdict(r) for r in self.requests],
            "sites": hp.sites,
            "train": hp.train,
            "steps": self.global_step,
            "lr": hp.lr,
            "seconds": self.seconds,
        }
        metadata["made_for"] = digest(self.originals[n] for n in sorted(self.trainable))
        return WeightEdit(deltas, metadata, self.model.family.denoiser)

    def on_validation_epoch_start(self) -> None:
        """The UNet goes back to its original weights, the unedited model every edit applies
        to; the trained ones are set aside until the next training step (checkpoints and the
        edit read them there), so after ``fit`` the model is the original and the report's
        export applies the trained delta to it."""
        self.edits = {self.method: self.edit_result()}
        if self._trained is None:
            params = dict(self.unet.named_parameters())
            self._trained = {n: params[n].detach().clone() for n in self.trainable}
            with torch.no_grad():
                for n in self.trainable:
                    params[n].copy_(self.originals[n])
        super().on_validation_epoch_start()  # metrics for every edit
