"""What an edit is judged on: prompts in three groups, each with what should (not) be seen."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import lightning as L
import yaml
from torch.utils.data import DataLoader

from loco_lightning.models.sampling import NoiseMode, noise_seed

Group = Literal["efficacy", "generality", "specificity", "reference"]
GROUPS: tuple[Group, ...] = get_args(Group)  # the triad's order, the reference row last
UNEDITED = "unedited"  # the row of the model as loaded


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt.

    Attributes:
        group: ``efficacy`` (prompts with the concept: it should go), ``generality`` (held-out
            templates and paraphrases: it should go too), ``specificity`` (unrelated and
            neighbouring concepts: nothing should change), ``reference`` (the target prompts,
            whose unedited images are what a removal can at best reach: the model's prior).
        prompt: the prompt generated.
        score_text: text the image is CLIP-scored against (default: the prompt itself; for a
            fact update, the new fact).
        expect: world only: attribute values an exact reader checks in the image.
    """

    group: Group
    prompt: str
    score_text: str | None = None
    expect: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class EvalItem:
    """One evaluation image: a prompt, a seed, and the seed of its starting noise."""

    prompt: EvalPrompt
    seed: int
    noise_seed: int | None = None

    def __post_init__(self) -> None:
        if self.noise_seed is None:
            object.__setattr__(self, "noise_seed", self.seed)


def load_eval_prompts(path: str | Path) -> list[EvalPrompt]:
    """Evaluation prompts from YAML: ``{efficacy: [...], generality: [...], specificity: [...]}``
    where an entry is a prompt string or ``{prompt, score_text?, expect?}``."""
    raw = yaml.safe_load(Path(path).read_text())
    out = []
    for group in GROUPS:
        for entry in raw.get(group, []):
            entry = {"prompt": entry} if isinstance(entry, str) else entry
            out.append(EvalPrompt(group=group, **entry))
    if not out:
        raise ValueError(f"{path} holds no efficacy/generality/specificity prompts.")
    return out


def csv_rows(option: str, path: str, expected: str) -> list[dict[str, str]]:
    """The rows of a user's CSV, refused with the option's name where the file is missing.

    Args:
        option: the option that names the file (``data.captions``).
        path: the CSV.
        expected: what it should be, for the error (columns and an example path).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{option}={path!r} does not exist: give {expected}.")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class ItemBatches(L.LightningDataModule):
    """What the evaluation data modules share: their :meth:`items` in batches of
    ``batch_size``, left on the CPU (prompts, not tensors), and ``train_steps`` step indices
    for the fit loop (one empty step where the edits are solved in ``on_fit_start``)."""

    batch_size: int = 32
    train_steps: int = 1

    def items(self) -> list:
        """What the validation loop judges, in order."""
        raise NotImplementedError

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.train_steps), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.items(), batch_size=self.batch_size, collate_fn=list)


class EditEvalData(ItemBatches):
    """Evaluation items for the triad, and the fit loop's step indices.

    The train loader yields ``train_steps`` step indices and no data: closed-form edits solve in
    ``on_fit_start`` (one empty step), fine-tuning baselines draw their own deterministic batch
    from the step index (so a resumed run continues exactly).

    Args:
        prompts: evaluation prompts, or the path of a YAML file of them.
        seeds: seeds; every prompt is generated with each.
        batch_size: prompts per UNet batch.
        train_steps: optimisation steps per epoch (1 for closed-form edits).
        noise: ``per_prompt`` (prompt i of a group, under seed s, has its own starting noise,
            shared by every method and by the i-th prompt of the other groups, so efficacy
            prompt i and its reference row start alike) or ``shared`` (seed s's noise for all).
        groups: the prompt groups to evaluate (None: every group the prompts have).
        edited_by: groups that only the named editors generate (the unedited model generates
            every group): ``{reference: []}`` reads the reference prompts for the unedited model
            alone, a bar the edits are read against, not a question about them;
            ``{specificity: [locoedit]}`` skips the other editors' specificity images.
    """

    def __init__(
        self,
        prompts: list[EvalPrompt] | str,
        seeds: list[int] = [0, 1],  # noqa: B006
        batch_size: int = 32,
        train_steps: int = 1,
        noise: NoiseMode = "per_prompt",
        groups: list[Group] | None = None,
        edited_by: dict[Group, list[str]] = {},  # noqa: B006
    ) -> None:
        super().__init__()
        self.prompts = load_eval_prompts(prompts) if isinstance(prompts, str) else prompts
        if groups is not None:
            kept = [p for p in self.prompts if p.group in groups]
            if not kept:
                present = sorted({p.group for p in self.prompts})
                raise ValueError(f"data.groups={groups} keeps no prompt; these have {present}.")
            self.prompts = kept  # each prompt keeps its noise: it is numbered within its group
        self.seeds = seeds
        self.batch_size = batch_size
        self.train_steps = train_steps
        self.noise = noise
        self.edited_by = {g: set(names) for g, names in edited_by.items()}

    def generates(self, method: str, group: str) -> bool:
        """Whether ``method``'s images of ``group`` are made and scored."""
        return method == UNEDITED or method in self.edited_by.get(group, {method})

    def check_editors(self, editors: list[str]) -> None:
        """Refuse ``edited_by`` names that are not editors of the run (a typo would silently
        skip a group)."""
        unknown = sorted({n for names in self.edited_by.values() for n in names} - set(editors))
        if unknown:
            raise ValueError(
                f"data.edited_by names {unknown}, which are not editors of this run ({editors}); "
                "name editors from model.editors."
            )

    @property
    def groups(self) -> list[str]:
        """The prompt groups present, in the triad's order (efficacy, generality, …)."""
        present = {p.group for p in self.prompts}
        return [g for g in GROUPS if g in present]

    def items(self) -> list[EvalItem]:
        position: dict[str, int] = {}
        items = []
        for p in self.prompts:
            i = position[p.group] = position.get(p.group, -1) + 1
            items += [EvalItem(p, s, noise_seed(s, i, self.noise)) for s in self.seeds]
        return items
