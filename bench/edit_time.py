"""Time to edit: LocoEdit's closed form against ESD-x trained until it removes the concept as well.

One run on the world: LocoEdit is solved (best of a few repeats) and its concept survival read
with the exact readers; ESD-x then trains, its survival read every ``--every`` steps (reading
time excluded), until it is at or below LocoEdit's; its time to edit counts the training images
and the optimisation steps. Prints both times and their ratio.
    python bench/edit_time.py --threads 1
    python bench/edit_time.py --threads 1 --sites 3 4   # LocoEdit on a window instead of all sites
"""

from __future__ import annotations

import argparse
import logging

import lightning as L
import torch

from loco_lightning.baselines import ESD, FineTune, FineTuneModule
from loco_lightning.editing.data import EditEvalData
from loco_lightning.editing.editors import run_editor
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.requests import edit_requests
from loco_lightning.models.diffusion import Diffusion

EDIT = "datasets/world/style_striped.edit.yaml"
EVAL = "datasets/world/style_striped.eval.yaml"


def survival(module, items) -> float:
    """Fraction of efficacy images in which the exact readers still see the concept."""
    model = module.model
    cond = model.encode([it.prompt.prompt for it in items])
    images = module.diffusion.denoise(model, cond, [it.noise_seed for it in items])
    hits = module.reader_match.scores(images, [it.prompt.expect for it in items])
    return float(hits.mean())


class Probe(L.Callback):
    """Reads survival every ``every`` steps, before the step's timer starts; stops at ``target``."""

    def __init__(self, items, every: int, target: float) -> None:
        self.items, self.every, self.target = items, every, target
        self.history: list[tuple[int, float, float]] = []  # (steps, seconds to edit, survival)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step and step % self.every == 0:
            self.read(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        if not trainer.should_stop:
            self.read(trainer, module)

    def read(self, trainer, module) -> None:
        step = trainer.global_step
        with torch.no_grad():
            rate = survival(module, self.items)
        self.history.append((step, module.seconds, rate))
        logging.info("ESD-x step %d: %.1f s, survival %.3f", step, module.seconds, rate)
        if rate <= self.target:
            trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=None, help="world model (default: world-sd1)")
    parser.add_argument("--clip", default="worldclip", help="CLIP scorer (the harness needs one)")
    parser.add_argument("--sites", type=int, nargs="*", default=None, help="default: all sites")
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--negative", choices=["empty", "without"], default="without")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--every", type=int, default=10, help="ESD-x steps between readings")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    requests = edit_requests(EDIT)
    esd = FineTuneModule(
        requests,
        ESD(negative=args.negative),
        diffusion=Diffusion(source=args.source),
        tuning=FineTune(lr=args.lr, batch_size=args.batch_size),
        clip=args.clip,
    )
    data = EditEvalData(EVAL, seeds=args.seeds, train_steps=args.max_steps)
    items = [it for it in data.items() if it.prompt.group == "efficacy"]
    esd.setup("fit")
    model = esd.model
    editor = LocoEdit(
        sites=tuple(args.sites) if args.sites is not None else "all",
        lambda_k=args.lam,
        lambda_v=args.lam,
        key_tokens="aligned",
        preserve=EDIT,
    )
    before = survival(esd, items)
    edits = [run_editor(editor, model, requests) for _ in range(args.repeats)]
    with edits[-1].applied(model):
        target = survival(esd, items)
    loco = min(e.metadata["seconds"] for e in edits)
    logging.info(
        "unedited survival %.3f; LocoEdit (sites %s) %.3f in %.2f ms",
        before,
        edits[-1].metadata["sites"],
        target,
        loco * 1e3,
    )

    probe = Probe(items, args.every, target)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[probe],
    )
    trainer.fit(esd, datamodule=data)
    reached = [h for h in probe.history if h[2] <= target]
    steps, seconds, rate = reached[0] if reached else probe.history[-1]
    bound = "" if reached else f" (did not reach {target:.3f} in {steps} steps: a lower bound)"
    print(
        f"world ({args.source or 'world-sd1'}), {len(items)} efficacy images, "
        f"{args.threads} threads: unedited survival {before:.3f}; LocoEdit {target:.3f} in "
        f"{loco * 1e3:.2f} ms; ESD-x {rate:.3f} after {steps} steps in {seconds:.1f} s; "
        f"ESD-x / LocoEdit = {seconds / loco:,.0f}x{bound}"
    )


if __name__ == "__main__":
    main()
