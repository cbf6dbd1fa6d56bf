"""The ``loco`` command: one LightningCLI per job, each with its YAML config."""

from __future__ import annotations

import sys
from dataclasses import dataclass

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
}


def usage() -> str:
    lines = ["usage: loco <job> [--config CONFIG.yaml] [--help]", "", "jobs:"]
    lines += [f"  {name:<10} {job.help}" for name, job in JOBS.items()]
    lines += ["", "Each job is a LightningCLI: `loco <job> --help` lists its options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``loco`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        sys.exit(f"loco: unknown job {name!r}\n\n{usage()}")
    job = JOBS[name]
    module, datamodule = job.classes()
    args = [job.run, *rest] if job.run else rest
    LightningCLI(
        module,
        datamodule,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": f"loco {name}"}
        if not job.run
        else {job.run: {"prog": f"loco {name}"}},
    )


if __name__ == "__main__":
    main()
