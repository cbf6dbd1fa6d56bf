"""The ``loco`` command: one LightningCLI per job, each with its YAML config."""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
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
    "attack": Job(
        "loco_lightning.robustness.module.AttackModule",
        "loco_lightning.editing.data.EditEvalData",
        "fit",
        "robustness card: every editor of a comparison under recovery attacks (textual "
        "inversion, a prompt attack, a concept vector) at growing budgets",
    ),
    "scale": Job(
        "loco_lightning.robustness.scale.ScaleModule",
        "loco_lightning.robustness.scale.GridData",
        "fit",
        "many concepts at once: every closed-form editor erases N values of a world attribute "
        "together; time to edit and UnlearnCanvas's accuracies against N",
    ),
    "i2p": Job(
        "loco_lightning.robustness.i2p.I2PModule",
        "loco_lightning.robustness.i2p.PromptCSV",
        "fit",
        "the I2P protocol: every editor of a comparison on a CSV of inappropriate prompts, "
        "judged by NudeNet (or any image classifier), a rate per method and category",
    ),
    "quality": Job(
        "loco_lightning.editing.quality.QualityModule",
        "loco_lightning.editing.quality.CaptionsData",
        "fit",
        "COCO-style image quality of every editor of a comparison: FID against reference "
        "images and CLIP score on a captions file",
    ),
    "sample": Job(
        "loco_lightning.editing.sample.SampleModule",
        "loco_lightning.editing.sample.SampleData",
        "predict",
        "images from the base model beside edited variants (a saved edit, a LoRA, a pipeline)",
    ),
    "trace": Job(
        "loco_lightning.localization.causal.CausalTracingModule",
        "loco_lightning.localization.data.TraceData",
        "validate",
        "causal tracing (the older localizer): restore one layer at a time, score recovery",
    ),
    "contribution": Job(
        "loco_lightning.localization.contribution.ContributionModule",
        "loco_lightning.localization.data.TraceData",
        "validate",
        "DiT localizer (Zarei et al.): rank sites by the attention output the concept's tokens "
        "carry, take the top K",
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
    """LightningCLI plus the process-wide setting a 2-core machine needs (torch's thread count)
    and one folder per run (see :func:`run_folder`).

    Made on first use, so that `loco --help` imports neither torch nor Lightning.
    """
    import torch
    from lightning.pytorch.cli import LightningCLI

    class LocoCLI(LightningCLI):
        job = ""  # set per job by build()

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument(
                "--threads",
                type=int | None,
                default=None,
                help="torch CPU threads (default: torch's choice). Two torch processes sharing "
                "the cores must split them, or both slow down many times over.",
            )
            parser.add_argument(
                "--name",
                type=str | None,
                default=None,
                help="the run's name: its folder becomes lightning_logs/<job>/<name> "
                "(model.output_dir), holding results, TensorBoard events and config.yaml.",
            )

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.get("threads"):
                torch.set_num_threads(config.threads)
            run_folder(config, self.job, self.subcommand)

    return LocoCLI


def run_folder(config, job: str, subcommand: str | None = None) -> None:
    """One folder per run: a TensorBoard logger writes into the run's folder itself (no
    ``version_N`` beside it), so the events, the resolved ``config.yaml`` and every result sit
    together, and a rerun or resume finds the same folder.

    Result jobs keep their folder in ``model.output_dir``; ``--name`` sets it to
    ``lightning_logs/<job>/<name>``. Training jobs' folder is the logger's own (``--name`` makes it
    ``lightning_logs/<job>/<name>`` too); since a new ``fit`` there would overwrite its checkpoints
    and exported model, one is refused unless it resumes (``--ckpt_path last``). Without a
    logger, a result job's ``config.yaml`` still goes to its ``model.output_dir``.
    """
    name = config.get("name")
    if name is not None and ("/" in name or name in ("", ".", "..")):
        raise ValueError(f"--name={name!r}: give a plain folder name, e.g. my_run.")
    model = config.get("model") or {}
    if name and "output_dir" in model:
        model.output_dir = f"lightning_logs/{job}/{name}"
    logger = config.get("trainer", {}).get("logger")
    if not getattr(logger, "class_path", "").endswith("TensorBoardLogger"):
        trainer = config.get("trainer")
        if "output_dir" in model and trainer is not None and not trainer.get("default_root_dir"):
            trainer.default_root_dir = model.output_dir  # config.yaml there too, not in the cwd
        return
    if "output_dir" in model:
        folder = Path(model.output_dir)
        logger.init_args.save_dir, logger.init_args.name = str(folder.parent), folder.name
    elif name:
        logger.init_args.save_dir, logger.init_args.name = f"lightning_logs/{job}", name
    logger.init_args.version = ""
    folder = Path(logger.init_args.save_dir) / logger.init_args.name
    if subcommand == "fit" and not config.get("ckpt_path") and any(folder.glob("checkpoints/*")):
        raise ValueError(
            f"{folder} holds an earlier run's checkpoints: resume it with --ckpt_path last, "
            "or start a new one with --name <new_name>."
        )


def usage() -> str:
    lines = ["usage: loco <job> [--config CONFIG.yaml] [--help]", "", "jobs:"]
    lines += [f"  {name:<10} {job.help}" for name, job in JOBS.items()]
    lines += [
        "  report     rebuild a run folder's report.html and report.md from its files",
        "  prompts    write a concept's pairs, edit and evaluation prompt sets (any world "
        "concept, or a real style or object)",
    ]
    lines += ["", "Each job is a LightningCLI: `loco <job> --help` lists its options."]
    return "\n".join(lines)


def build(name: str, args: list[str], run: bool = True) -> LightningCLI:
    """The LightningCLI of job ``name`` (configs live in ``configs/<name>/``).

    With ``run=False`` the classes are only instantiated from ``args`` (used to check configs).
    """
    if name not in JOBS:
        close = difflib.get_close_matches(name, JOBS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise LookupError(f"unknown job {name!r}: {hint}`loco --help` lists the jobs.")
    job = JOBS[name]
    module, datamodule = job.classes()
    if run and job.run:
        args = [job.run, *args]
    cli = type("LocoCLI", (loco_cli(),), {"job": name})
    return cli(
        module,
        datamodule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        # a parse error is raised (ArgumentError) for entry() to say in one line, not a usage dump
        parser_kwargs={"prog": f"loco {name}", "exit_on_error": False},
    )


HELP = Path(__file__).parent / "help"  # each job's help, stored: `loco <job> --help` at once


def render_help(name: str) -> str:
    """Job ``name``'s help as LightningCLI prints it, with the Trainer's ~300 lines and the
    optimizer choices folded into a pointer to ``--help-all`` (slow: it imports the job)."""
    import contextlib
    import io

    out = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # the stored text must not depend on the terminal
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build(name, ["--help"])
    finally:
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    blocks = re.split(r"\n\n(?=\S)", out.getvalue().strip())
    stage = "" if JOBS[name].run else " {fit,validate,test,predict}"
    kept = [f"usage: loco {name}{stage} [--config CONFIG.yaml] [options]", JOBS[name].help]
    start = next((i for i, b in enumerate(blocks) if b.startswith("options:")), 1)
    for block in blocks[start:]:
        if re.search(r"^  --(trainer|optimizer|lr_scheduler)\b", block, re.M):
            continue
        kept.append(block)
    kept.append(
        "More options:\n  --trainer.*            every Lightning Trainer argument (accelerator, "
        "devices, max_steps,\n                         callbacks, logger, ...)\n"
        f"  --help-all             all of them (slower: `loco {name} --help-all`)"
    )
    return "\n\n".join(kept) + "\n"


def write_help() -> None:
    """Store every job's :func:`render_help` (after changing a job's options or docstrings)."""
    HELP.mkdir(exist_ok=True)
    for name in JOBS:
        (HELP / f"{name}.txt").write_text(render_help(name))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``loco`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] == "report":  # rebuilt from a run folder: no model, no Lightning
        from loco_lightning.report import write_report

        if len(argv) != 2 or argv[1].startswith("-"):
            raise ValueError("usage: loco report <run folder> (it writes report.html and .md)")
        if not Path(argv[1], "config.yaml").is_file():
            raise FileNotFoundError(f"{argv[1]} holds no run (no config.yaml); give a run folder.")
        print(write_report(argv[1]))
        return
    if argv[0] == "prompts":  # writes files: no model, no Lightning
        from loco_lightning.prompt_sets import main as prompts

        prompts(argv[1:])
        return
    if argv[1:] in (["-h"], ["--help"]) and (HELP / f"{argv[0]}.txt").is_file():
        print((HELP / f"{argv[0]}.txt").read_text(), end="")
        return
    argv = ["--help" if a == "--help-all" else a for a in argv]
    # sys.argv stays as it is: DDP re-launches this very command line on every other rank.
    quiet()
    build(argv[0], argv[1:])


# Said on every run and meant for someone else: library deprecations between pinned versions,
# Lightning's advertisements, and Lightning's doubt about modules our jobs freeze on purpose.
NOISE = (
    "LightningCLI's args parameter is intended",
    "`torch_dtype` is deprecated",  # diffusers; older releases take only torch_dtype
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning on torch >= 2.10
    r"Found \d+ module\(s\) in eval mode",  # the frozen models and scorers
    r"Checkpoint directory .* exists and is not empty",  # run_folder: only a resume gets here
    "predict returned None if it was on purpose",  # loco sample writes its images itself
)


def quiet() -> None:
    """Filter :data:`NOISE` from warnings and Lightning's tips from its log, and drop the
    libraries' per-load progress bars ("Loading weights", "Loading pipeline components"), for
    this process; the jobs' own progress bars stay."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "Tip:" not in record.getMessage()
    )


# bad values, names, files, options: the user's to fix
USER_ERRORS = (ValueError, LookupError, OSError, argparse.ArgumentError)


def one_line(message: str) -> str:
    """A user error's message on one line.

    jsonargparse reports a value that no type of a union accepts as a nested list of every
    type's complaint ("Expected a <class 'str'>" beside the one that matters): the complaints
    raised by our own checks are kept, type mismatches are said as "'x' is not a float or None",
    and the offending key (``model.editors (LocoEdit).key_tokens``) stays in front.
    """
    message = str(message)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    classes = re.findall(r"Problem with given class_path '(?:[\w.]+\.)?(\w+)'", message)
    front = ""
    if keys:
        front = keys[0] + (f" ({classes[-1]})" if classes else "")
        front += "".join(f".{k}" for k in keys[1:]) + ": "
    complaints = [line.removeprefix("- ") for line in lines]
    own = [c for c in complaints if not re.match(_NOISE, c)]
    if own:
        return front + " ".join(dict.fromkeys(own))
    expected = [
        m[1] for c in complaints if (m := re.match(r"Expected a (?!path)(.+?)(\. Got|$)", c))
    ]
    given = [c.split("Got value:", 1)[1].strip() for c in complaints if "Got value:" in c]
    given += [c.split(":", 1)[1].strip() for c in complaints if c.startswith("Given value:")]
    types = " or ".join(dict.fromkeys(_type_name(t) for t in expected)) or "an accepted value"
    return f"{front}{given[-1] if given else '?'!r} is not {types}"


_NOISE = (
    r"(Expected a|Not a valid|Import path|Does not validate|Subtypes:|Errors:|Given value"
    r"|Parser key|Problem with given class_path)"
)


def _type_name(annotation: str) -> str:
    """``<class 'float'>`` -> ``a float``; ``typing.Literal['a', 'b']`` -> ``one of 'a', 'b'``."""
    literal = re.match(r"typing\.Literal\[(.*)\]$", annotation)
    if literal:
        return f"one of {literal[1]}"
    name = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", annotation)
    return "None" if name == "NoneType" else f"a {name}"


def entry() -> None:
    """The ``loco`` console script: :func:`main`, with a user's mistake (a bad value, a missing
    file, a wrong name or option, each raised with the value and the fix) said in one line and
    exit status 2; ``LOCO_DEBUG=1`` shows the traceback, as every other error always does."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("LOCO_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(
            f"loco: error: {one_line(message)} (LOCO_DEBUG=1 shows the traceback)", file=sys.stderr
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    entry()
