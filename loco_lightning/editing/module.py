"""One LightningModule for every edit job: named editors solved in ``on_fit_start``, then
evaluated side by side with the unedited model on the same prompts and seeds."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_info
from matplotlib.figure import Figure

# the editor modules register their editors (and let YAML name them by class alone)
from loco_lightning.editing import locoedit, neurons, published, quickfix  # noqa: F401
from loco_lightning.editing.data import EditEvalData
from loco_lightning.editing.editors import Editor, run_editor
from loco_lightning.editing.evaluation import EditEvaluation
from loco_lightning.editing.plots import efficacy_specificity, time_to_edit
from loco_lightning.editing.requests import EditRequest, edit_requests
from loco_lightning.editing.streams import shared_streams
from loco_lightning.models.diffusion import Diffusion


class EditModule(EditEvaluation):
    """Editors by name, each computed once and evaluated with the triad: ``loco edit``,
    ``loco compare``, ``loco quickfix`` and ``loco neurons`` are configs of this module.

    Args:
        requests: what to edit (several concepts in one edit are fine), or the path of an edit
            prompt set (``datasets/world/*.edit.yaml``).
        editors: row name -> editor (``LocoEdit``, ``UCE``, ``TIME``, ``QuickFix``, ``Neurons``,
            ``Saved`` for a trained baseline's delta, …; see ``EDITORS``).
        locogen: output folder of a ``loco localize`` run, for editors whose sites are
            ``locogen`` or ``random``.
        random_seed: seed of the ``random`` window.
        diffusion, clip, fid_weights, output_dir: see :class:`EditEvaluation`.
    """

    def __init__(
        self,
        requests: list[EditRequest] | str,
        editors: dict[str, Editor],
        diffusion: Diffusion = Diffusion(),  # noqa: B008 (frozen)
        locogen: str | None = None,
        random_seed: int = 0,
        clip: str | None = None,
        fid_weights: str | None = None,
        output_dir: str = "lightning_logs/edit/run",
    ) -> None:
        super().__init__(diffusion, clip, fid_weights, output_dir)
        if not editors:
            raise ValueError("model.editors is empty: name at least one editor (see EDITORS).")
        self.save_hyperparameters(ignore=["editors"])
        self.editors = dict(editors)
        self.requests = edit_requests(requests)

    def setup(self, stage: str) -> None:
        for editor in self.editors.values():  # before minutes of loading and solving
            editor.check()
        if isinstance(self.trainer.datamodule, EditEvalData):
            self.trainer.datamodule.check_editors(list(self.editors))
        super().setup(stage)

    def on_fit_start(self) -> None:
        hp = self.hparams
        with shared_streams():  # the editors read the unedited model: one sampling run for all
            for name, editor in self.editors.items():
                resolved = editor.resolve(self.model, hp.locogen, hp.random_seed)
                edit = run_editor(resolved, self.model, self.requests)
                edit.metadata["empty_drift"] = edit.empty_drift(self.model)
                self.edits[name] = edit
                rank_zero_info(
                    f"{name}: {resolved.name} in {edit.metadata['seconds'] * 1e3:.1f} ms, "
                    f"empty-prompt drift {edit.metadata['empty_drift']:.2e}"
                )

    def figures(self) -> dict[str, Figure]:
        """The comparison's figures, by file name."""
        if not self.table:
            return {}
        return {
            "efficacy_specificity": efficacy_specificity(self.table),
            "time_to_edit": time_to_edit(self.table),
        }
