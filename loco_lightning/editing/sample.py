"""``loco sample``: the base model's images beside those of edited variants, in one labelled grid.

A variant is whatever an edit run (or anyone else) left: a saved edit (``.safetensors`` from
``load_edit``), a LoRA folder or file diffusers loads, or an edited pipeline folder. Each becomes
weight deltas on the base model, so every variant is sampled from the same noise by the same
pipeline, and the grid shows the edit alone.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_info
from safetensors import safe_open
from torch.utils.data import DataLoader
from torchvision.utils import save_image

from loco_lightning.editing.edits import Edit, WeightEdit, load_edit
from loco_lightning.editing.exports import LORA_FILE
from loco_lightning.files import atomic_path, check_folder, save_figure
from loco_lightning.grids import labelled_grid
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import Diffusion
from loco_lightning.report import write_report

BASE = "base"


def load_variant(path: str | Path, model: LocoModel) -> list[Edit]:
    """The edits that turn ``model`` into the variant at ``path``.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` is none of a saved edit, a LoRA, or a pipeline folder.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Variant {str(path)!r} does not exist: give a saved edit (.safetensors), a LoRA "
            "folder or file, or an exported pipeline folder."
        )
    if path.is_dir() and (path / "model_index.json").is_file():
        return folder_edits(path, model)
    if path.is_dir() and (path / LORA_FILE).is_file():
        return lora_edits(path / LORA_FILE, model)
    if path.is_file() and path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            saved = "loco_edit" in (f.metadata() or {})
        return [load_edit(path)] if saved else lora_edits(path, model)
    raise ValueError(
        f"Variant {str(path)!r} is neither a saved edit (.safetensors), a LoRA ({LORA_FILE}) "
        "nor a pipeline folder (model_index.json)."
    )


def lora_edits(path: Path, model: LocoModel) -> list[Edit]:
    """A LoRA as weight deltas ``(alpha / r) · B @ A`` (+ ``lora_B.bias``), read by diffusers'
    own ``lora_state_dict``, so every format it converts is understood."""
    state, alphas = type(model.pipeline).lora_state_dict(str(path))
    alphas = alphas or {}
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for key, down in state.items():
        for a_name, b_name in (("lora_A", "lora_B"), ("lora.down", "lora.up")):
            if key.endswith(f".{a_name}.weight"):
                module = key.removesuffix(f".{a_name}.weight")
                up = state[f"{module}.{b_name}.weight"]
                scale = alphas.get(f"{module}.alpha", down.shape[0]) / down.shape[0]
                component, _, inside = module.partition(".")
                out = deltas.setdefault(component, {})
                out[f"{inside}.weight"] = scale * up.float() @ down.float()
                bias = state.get(f"{module}.{b_name}.bias")
                if bias is not None:
                    out[f"{inside}.bias"] = bias.float()
    if not deltas:
        raise ValueError(f"{path} holds no LoRA weights diffusers recognises.")
    params = {c: dict(model.component(c).named_parameters()) for c in deltas}
    return [
        WeightEdit({k: v.to(params[c][k]) for k, v in d.items()}, {"lora": str(path)}, c)
        for c, d in deltas.items()
    ]


@torch.no_grad()
def folder_edits(folder: Path, model: LocoModel) -> list[Edit]:
    """An edited pipeline folder as the deltas of the weights it changed (of the UNet and the
    text encoders; a variant that changes anything else is refused)."""
    other = type(model.pipeline).from_pretrained(str(folder), torch_dtype=model.denoiser.dtype)
    edits = []
    for name, module in model.pipeline.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        theirs = dict(getattr(other, name).named_parameters())
        ours = dict(module.named_parameters())
        if theirs.keys() != ours.keys() or any(theirs[k].shape != v.shape for k, v in ours.items()):
            raise ValueError(f"{folder}: its {name} is not this model's; sample it on its own.")
        changed = {
            k: (theirs[k].to(v) - v) for k, v in ours.items() if not torch.equal(theirs[k].to(v), v)
        }
        if changed:
            edits.append(WeightEdit(changed, {"folder": str(folder)}, name))
    return edits


class SampleData(L.LightningDataModule):
    """(prompt, seed) pairs to sample.

    Args:
        prompts: prompts, or the path of a prompt set: an evaluation set
            (``datasets/world/*.eval.yaml``: every group's prompts) or a YAML list.
        seeds: every prompt is sampled with each.
        batch_size: prompts per UNet batch.
    """

    def __init__(self, prompts: list[str] | str, seeds: list[int] = [0], batch_size: int = 16):  # noqa: B006
        super().__init__()
        self.prompts = read_prompts(prompts) if isinstance(prompts, str) else list(prompts)
        if not self.prompts:
            raise ValueError("data.prompts is empty: give at least one prompt to sample.")
        if not seeds or min(seeds) < 0:
            raise ValueError(f"data.seeds={seeds}: give one or more seeds >= 0.")
        self.seeds = seeds
        self.batch_size = batch_size

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch

    def predict_dataloader(self) -> DataLoader:
        rows = [(p, s) for p in self.prompts for s in self.seeds]
        return DataLoader(rows, batch_size=self.batch_size, collate_fn=list)


def read_prompts(path: str) -> list[str]:
    """Prompts from a YAML list, or every prompt of an evaluation set's groups."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Prompt file {path!r} does not exist; give a YAML list or set.")
    raw = yaml.safe_load(Path(path).read_text())
    if isinstance(raw, dict):
        raw = [e for group in raw.values() if isinstance(group, list) for e in group]
    return [e["prompt"] if isinstance(e, dict) else str(e) for e in raw or []]


class SampleModule(L.LightningModule):
    """Samples every (prompt, seed) from the base model and from each variant, writes
    ``samples.png`` (rows: prompt and seed; columns: base, then the variants) and one PNG per
    image under ``<output_dir>/<variant>/``.

    Args:
        diffusion: the base model and its sampler.
        variants: column name -> saved edit, LoRA, or edited pipeline folder.
        output_dir: where the grid and the images go.
    """

    def __init__(
        self,
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        variants: dict[str, str] = {},  # noqa: B006
        output_dir: str = "lightning_logs/sample/run",
    ) -> None:
        super().__init__()
        check_folder("model.output_dir", output_dir)
        if BASE in variants:
            raise ValueError(f"model.variants names {BASE!r}, the base model's column; rename it.")
        self.save_hyperparameters()
        self.diffusion = diffusion
        self.model: LocoModel | None = None
        self.rows: list[tuple[str, int]] = []
        self.images: dict[str, list[torch.Tensor]] = {}

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:  # the grid is drawn from one process's images
            raise ValueError("loco sample runs on one device: set trainer.devices: 1.")
        if self.model is None:
            self.model = self.diffusion.load(str(self.device))
            self.variants = {
                n: load_variant(p, self.model) for n, p in self.hparams.variants.items()
            }

    def on_predict_start(self) -> None:
        self.rows, self.images = [], {name: [] for name in [BASE, *self.variants]}

    def predict_step(self, batch: list[tuple[str, int]], batch_idx: int) -> None:
        cond = self.model.encode([p for p, _ in batch])
        seeds = [s for _, s in batch]
        self.rows += batch
        for name in self.images:
            with ExitStack() as stack:
                for edit in self.variants.get(name, []):
                    stack.enter_context(edit.applied(self.model))
                self.images[name] += list(self.diffusion.denoise(self.model, cond, seeds).cpu())

    def on_predict_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        out = Path(self.hparams.output_dir)
        for name, images in self.images.items():
            for i, image in enumerate(images):
                with atomic_path(out / name / f"{i:03d}.png") as tmp:
                    save_image(image, tmp)  # the image at its own size, pixel for pixel
        labels = [f"{prompt}, seed {seed}" for prompt, seed in self.rows]
        grid = labelled_grid(list(zip(*self.images.values())), labels, list(self.images))
        save_figure(grid, out / "samples.png")
        write_report(out)
        rank_zero_info(f"wrote {out / 'samples.png'} ({len(self.rows)} rows x {len(self.images)})")
