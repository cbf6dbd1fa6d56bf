"""What every localizer shares: the model, its scorers, and a resumable results folder."""

from __future__ import annotations

import lightning as L
from torch import Tensor

from loco_lightning.files import check_folder, write_table
from loco_lightning.localization.results import ResultStore
from loco_lightning.metrics.clip import SampleCLIPScore
from loco_lightning.metrics.readers import world_match
from loco_lightning.models import LocoModel
from loco_lightning.models.diffusion import Diffusion, log_resolved, resolved
from loco_lightning.models.pipeline import packaged
from loco_lightning.report import write_report


class Localizer(L.LightningModule):
    """Base of the localization modules; subclasses define the items, the table and the plots.

    Args:
        diffusion: the model and its sampler settings.
        clip: CLIP scorer: hub id, local folder, or ``worldclip`` (packaged); None: the model's
            own (its world's CLIP, else the family's ``openai/clip-vit-large-patch14``).
        output_dir: results folder; stable, so that a rerun with the same config resumes.
    """

    #: settings that only choose from the finished rows: a rerun may change them and reselect
    selection_only: tuple[str, ...] = ()

    def __init__(
        self,
        diffusion: Diffusion,
        clip: str | None = None,
        output_dir: str = "lightning_logs/localize/run",
    ) -> None:
        super().__init__()
        check_folder("model.output_dir", output_dir)
        self.diffusion = diffusion
        self.model: LocoModel | None = None
        self.reader_match = None
        self.store: ResultStore | None = None
        self.table: list[dict] = []
        self.table_name = "windows"

    def setup(self, stage: str) -> None:
        hp = self.hparams
        if self.model is None:
            self.model = self.diffusion.load(str(self.device))
            self.scorer = hp.clip or self.model.scorer
            self.clip_score = SampleCLIPScore(packaged(self.scorer))
            self.reader_match = world_match(self.model.world)
            log_resolved(self, resolved(self.diffusion, self.model, self.scorer))
        self.store = ResultStore(
            hp.output_dir,
            self.fingerprint(self.trainer.datamodule),
            ignore=("output_dir", *self.selection_only),
        )
        self.store.open()

    def fingerprint(self, data) -> dict:
        """Everything that decides a run's rows; a resumed run must match it exactly."""
        return (
            dict(self.hparams)
            | {"clip": self.scorer, "diffusion": self.diffusion.resolved(self.model)}
            | data.fingerprint()
        )

    def done_keys(self) -> set[str]:
        """Keys of the finished items (their rows carry it as ``item``), which a resume skips."""
        return {row["item"] for row in self.store.rows()}

    @property
    def guidance(self) -> float:
        return self.model.guidance

    def scores(
        self, images: Tensor, texts: list[str], expects: list[dict[str, str]]
    ) -> tuple[list[float], list[float | None]]:
        """CLIP score of each image against its text, and (world) the exact-reader match."""
        clip = self.clip_score.scores(images, texts).tolist()
        reader: list[float | None] = [None] * len(texts)
        if self.reader_match is not None and all(expects):
            reader = self.reader_match.scores(images, expects).tolist()
        return clip, reader

    def on_validation_end(self) -> None:
        """The run's report, after every callback wrote its files (Lightning calls the module's
        hook after the callbacks')."""
        if self.trainer.is_global_zero and self.table:
            write_report(self.hparams.output_dir)

    def figures(self) -> dict:
        """Name -> matplotlib figure of the finished table (written by the report callback)."""
        return {}

    def write(self) -> None:
        """Table files of the finished run (called by the report callback on rank zero)."""
        write_table(self.table, self.hparams.output_dir, self.table_name)
