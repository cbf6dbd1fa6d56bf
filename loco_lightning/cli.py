"""The ``loco`` command: one LightningCLI per job, each with its YAML config."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and Lightning load with the first job, not for `loco --help`
    from lightning.pytorch.cli import LightningCLI


@dataclass(frozen=True)
class Job:
    """A ``loco`` subcommand: a LightningModule/DataModule pair and the Trainer entry point."""

    module: str
    datamodule: str
    run: str | None
    help: str

    def classes(self) -> tuple[type, type]:
        from importlib import import_module

        def load(path: str) -> type:
            mod, name = path.rsplit(".", 1)
            return getattr(import_module(mod), name)

        return load(self.module), load(self.datamodule)


JOBS = {
    "windows": Job(
        "loco_lightning.localization.grid.WindowGenerator",
        "loco_lightning.localization.data.WindowSweepData",
        "predict",
        "generate every window's image for prompt pairs (one UNet batch, many windows)",
    ),
    "localize": Job(
        "loco_lightning.localization.locogen.LocalizationModule",
        "loco_lightning.localization.data.WindowSweepData",
        "validate",
        "LocoGen: score every window of cross-attention sites, select where a concept lives",
    ),
    "edit": Job(
        "loco_lightning.editing.module.EditModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "LocoEdit: closed-form edit of the located sites, evaluated against alternatives",
    ),
    "neurons": Job(
        "loco_lightning.editing.module.EditModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "neuron-level editing: ablate the top-k concept neurons of the located sites, sweep k",
    ),
    "esd": Job(
        "loco_lightning.baselines.finetune.FineTuneModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "ESD-x baseline: fine-tune cross-attention with negative guidance away from a concept",
    ),
    "ablate": Job(
        "loco_lightning.baselines.finetune.FineTuneModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "Concept Ablation baseline: fine-tune K/V so the concept predicts an anchor's images",
    ),
    "quickfix": Job(
        "loco_lightning.editing.module.EditModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "Diff-QuickFix baseline: closed-form edit of the text encoder's layer-0 out_proj",
    ),
    "compare": Job(
        "loco_lightning.editing.module.EditModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "every editor by name (LocoEdit, UCE, TIME, trained baselines, …): one table, plots",
    ),
    "trace": Job(
        "loco_lightning.localization.causal.CausalTracingModule",
        "loco_lightning.localization.data.TraceData",
        "validate",
        "causal tracing (the older localizer): restore one layer at a time, score recovery",
    ),
    "world": Job(
        "loco_lightning.training.world.WorldDiffusion",
        "loco_lightning.data.world.datamodule.WorldDataModule",
        None,
        "train the embedded world's text-to-image model from scratch (fit / validate / test)",
    ),
    "worldvae": Job(
        "loco_lightning.training.vae.WorldVAE",
        "loco_lightning.data.world.datamodule.WorldDataModule",
        None,
        "train the latent worlds' autoencoder on world renders (fit / validate / test)",
    ),
    "worldclip": Job(
        "loco_lightning.training.worldclip.WorldCLIPModule",
        "loco_lightning.data.world.datamodule.WorldDataModule",
        None,
        "train WorldCLIP, the world's CLIPScore/FID backbone (fit / validate / test)",
    ),
}


@functools.cache
def loco_cli() -> type[LightningCLI]:
    """LightningCLI plus the process-wide setting a 2-core machine needs: torch's thread count.

    Made on first use, so that `loco --help` imports neither torch nor Lightning.
    """
    import torch
    from lightning.pytorch.cli import LightningCLI

    class LocoCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--threads",
                type=int | None,
                default=None,
                help="torch CPU threads (default: torch's choice). Two torch processes sharing "
                "the cores must split them, or both slow down many times over.",
            )

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.get("threads"):
                torch.set_num_threads(config.threads)

    return LocoCLI


def usage() -> str:
    lines = ["usage: loco <job> [--config CONFIG.yaml] [--help]", "", "jobs:"]
    lines += [f"  {name:<10} {job.help}" for name, job in JOBS.items()]
    lines += ["", "Each job is a LightningCLI: `loco <job> --help` lists its options."]
    return "\n".join(lines)


def build(name: str, args: list[str], run: bool = True) -> LightningCLI:
    """The LightningCLI of job ``name`` (configs live in ``configs/<name>/``).

    With ``run=False`` the classes are only instantiated from ``args`` (used to check configs).
    """
    if name not in JOBS:
        raise SystemExit(f"loco: unknown job {name!r}\n\n{usage()}")
    job = JOBS[name]
    module, datamodule = job.classes()
    if run and job.run:
        args = [job.run, *args]
    return loco_cli()(
        module,
        datamodule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": f"loco {name}"},
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``loco`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    # sys.argv stays as it is: DDP re-launches this very command line on every other rank.
    warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
    build(argv[0], argv[1:])


USER_ERRORS = (ValueError, LookupError, OSError)  # bad values, names, files: the user's to fix


def entry() -> None:
    """The ``loco`` console script: :func:`main`, with a user's mistake (a bad value, a missing
    file, a wrong name, each raised with the value and the fix) said in one line and exit
    status 2; ``LOCO_DEBUG=1`` shows the traceback, as every other error always does."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("LOCO_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"loco: error: {message} (LOCO_DEBUG=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entry()
