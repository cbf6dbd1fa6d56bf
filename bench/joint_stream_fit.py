"""Why the key/value closed form cannot do SD3's window swap: how much of it a linear map can.

On joint attention a block's ``add_k_proj``/``add_v_proj`` read the text stream, which earlier
blocks updated beside the image. LocoEdit's rows pair the concept prompt's stream with its target
prompt's stream on the same latents, step and pooled input (what LocoGen's window swap puts
there). This prints, per block, the share of the projected concept-to-target difference
``‖W x − W y‖`` that each fit leaves over those rows (0: the swap reproduced; 1: nothing done):

- ``closed``: the edit's own closed form (its λ, preserve rows and kept empty prompt);
- ``lsq``: the best linear map (least squares), the limit of any such edit;
- ``affine``: the same with a bias (what editing the projection's bias too would add);
- ``per step``: a separate least-squares map per sampling step (the range over steps): what a
  map that knew the step could do.

With ``--read``, the images too (the exact readers on the eval set's efficacy prompts, one
image per prompt and seed): unedited, the window swap to their reference prompts, the edit as
the tests make it, and the same closed form fitted on the efficacy prompts' own rows with almost
no ridge, no preserve rows and no kept empty prompt (as close to least squares on the rows the
images come from as the closed form goes): whether a linear map can do it even in sample.

With ``--rounds N``, the in-sample fit refitted N times on rows read along the *edited*
model's own runs (the rows of every round pooled; targets still the unedited model's stream of
the reference prompt on those latents): whether the rows' trajectories are what the edit lacks.

Not a test: a report (the numbers go into the notes and the expected failure's comment).
    python bench/joint_stream_fit.py --threads 2 --read
    python bench/joint_stream_fit.py --threads 2 --rounds 4
    python bench/joint_stream_fit.py --threads 2 --read --source world-flux-planted --blocks 2,3
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from loco_lightning.editing.closed_form import edit_factor
from loco_lightning.editing.data import load_eval_prompts
from loco_lightning.editing.editors import run_editor
from loco_lightning.editing.kv import Regression
from loco_lightning.editing.locoedit import LocoEdit
from loco_lightning.editing.requests import (
    EditRequest,
    edit_requests,
    key_positions,
    preserved,
)
from loco_lightning.editing.streams import STREAM_SEEDS, _on_latents, _reading, stream_inputs
from loco_lightning.hooks import PromptSwap, intervene, sites
from loco_lightning.metrics.readers import world_match
from loco_lightning.models import LocoModel, load_model
from loco_lightning.models.pipeline import Conditioning
from loco_lightning.models.sampling import denoise

F64 = torch.float64


def left(x: torch.Tensor, y: torch.Tensor, fitted: torch.Tensor, w: torch.Tensor) -> float:
    """Share of ``‖W x − W y‖`` that the fitted outputs leave."""
    want = y @ w.T
    return ((fitted - want).norm() / (x @ w.T - want).norm()).item()


def lsq(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    return inputs @ torch.linalg.lstsq(inputs, outputs).solution


def read(
    model: LocoModel,
    eval_set: str,
    blocks: tuple[int, ...],
    editor: LocoEdit,
    requests: list[EditRequest],
) -> None:
    """The readers' survival of the concept under the swap and the edits (see the docstring)."""
    prompts = load_eval_prompts(eval_set)
    efficacy = [p for p in prompts if p.group == "efficacy"]
    reference = [p.prompt for p in prompts if p.group == "reference"]  # efficacy's, in order
    copies = 2  # images per prompt, each on a seed of its own
    sources = [p.prompt for p in efficacy for _ in range(copies)]
    targets = [r for r in reference for _ in range(copies)]
    expect = [p.expect for p in efficacy for _ in range(copies)]

    def survival(cond: Conditioning, swaps: list[PromptSwap] = ()) -> float:
        # no swaps: the executor's empty intervention, which is the model itself
        with intervene(
            model.denoiser, list(swaps), encode=lambda p: tuple(model.encode(p)), cfg=model.cfg
        ):
            images = denoise(model, cond, list(range(len(sources))))
        return world_match(model.world).scores(images, expect).mean().item()

    src_cond, ref_cond = model.encode(sources), model.encode(targets)  # edits leave both
    concept = requests[0].concept
    own = dataclasses.replace(
        requests[0],
        templates=tuple(p.prompt.replace(concept, "{}") for p in efficacy),
        target_templates=tuple(reference),
        preserve=(),
    )
    in_sample = dataclasses.replace(
        editor, lambda_k=1e-4, lambda_v=1e-4, preserve_scale=1e-6, keep_empty=False
    )
    swaps = [PromptSwap(blocks, t, samples=(i,)) for i, t in enumerate(targets)]
    print(f"{eval_set}: survival over {len(sources)} images")
    print(f"  unedited {survival(src_cond):.3f}, its reference prompts {survival(ref_cond):.3f}")
    print(f"  the window swap to the reference prompts {survival(src_cond, swaps):.3f}")
    for name, (ed, rq) in {
        "the tests' edit": (editor, requests),
        "in-sample fit": (in_sample, [own]),
    }.items():
        with run_editor(ed, model, rq).applied(model):
            print(f"  {name} {survival(src_cond):.3f}")


@torch.no_grad()
def refit_on_own_runs(model: LocoModel, eval_set: str, blocks: tuple[int, ...], n: int) -> None:
    """The ``--rounds`` report (see the docstring): survival of the concept on the efficacy
    prompts and of the other attributes on the specificity prompts, after each round, on the
    images ``--read`` makes (two per prompt, seeds 0, 1, 2, …)."""
    prompts = load_eval_prompts(eval_set)
    groups = {g: [p for p in prompts if p.group == g] for g in ("efficacy", "specificity")}
    reference = [p.prompt for p in prompts if p.group == "reference"]
    seeds = STREAM_SEEDS
    net, found = model.denoiser, sites(model.denoiser)
    projections = [
        getattr(net.get_submodule(found[i].path), found[i].projection(p))
        for i in blocks
        for p in "kv"
    ]
    originals = [proj.weight.detach().clone() for proj in projections]
    sources = model.encode([p.prompt for p in groups["efficacy"] for _ in seeds])
    beside = model.encode([r for r in reference for _ in seeds])._replace(added=sources.added)
    m = sources.context.shape[0]
    noise = list(range(m))  # one seed per image, as --read draws them

    def survival(group) -> float:
        cond = model.encode([p.prompt for p in group for _ in seeds])
        images = denoise(model, cond, list(range(cond.context.shape[0])))
        return (
            world_match(model.world)
            .scores(images, [p.expect for p in group for _ in seeds])
            .mean()
            .item()
        )

    def set_factors(factors) -> None:
        for k, (proj, w) in enumerate(zip(projections, originals, strict=True)):
            f = None if factors is None else factors[blocks[k // 2]]
            proj.weight.copy_(w if f is None else (w.to(F64) @ f).to(w.dtype))

    xs: dict[int, list] = {i: [] for i in blocks}
    ys: dict[int, list] = {i: [] for i in blocks}
    factors = None
    for r in range(n + 1):
        set_factors(factors)
        calls: list[dict] = []
        hook = net.register_forward_pre_hook(
            lambda mod, a, kw, calls=calls: calls.append(dict(kw)), with_kwargs=True
        )
        with _reading(net, found, blocks, lambda i, x: xs[i].append(x[-m:].flatten(0, 1))):
            denoise(model, sources, noise)
        hook.remove()
        if r:
            print(
                f"  round {r}: efficacy {survival(groups['efficacy']):.3f}, "
                f"specificity {survival(groups['specificity']):.3f}"
            )
        if r == n:
            break
        set_factors(None)  # the targets: the unedited model's reference stream, same latents
        with _reading(net, found, blocks, lambda i, x: ys[i].append(x.flatten(0, 1))):
            for call in calls:
                net(**_on_latents(call, m, torch.arange(m), beside))
        factors = {
            i: edit_factor(torch.cat(xs[i]).to(F64), torch.cat(ys[i]).to(F64), 1e-3, dtype=F64)
            for i in blocks
        }
    set_factors(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="world-sd3-planted")
    parser.add_argument("--request", default="datasets/world/style_striped.edit.yaml")
    parser.add_argument("--blocks", default="3,4", help="joint-attention sites, e.g. 3,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--read", action="store_true", help="generate and read images too")
    parser.add_argument("--rounds", type=int, default=0, help="refit on the edited runs N times")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(source=args.source)
    blocks = tuple(int(b) for b in args.blocks.split(","))
    editor = LocoEdit(sites=blocks, key_tokens="aligned", lambda_k=0.5, lambda_v=0.5)  # the tests'
    requests = edit_requests(args.request)
    triples = [t for r in requests for t in r.pairs()]
    rows = Regression.of_prompts(
        model,
        [s for s, _, _ in triples],
        [t for _, _, t in triples],
        key_positions(model.segments, triples, editor.key_tokens),
        preserved(editor, requests),
    )
    sources, targets, preserve = rows.conditionings()
    streams = stream_inputs(model, blocks, sources, targets, rows.positions, preserve)
    per_call = sum(len(p) for p in rows.positions) * len(STREAM_SEEDS)  # rows a step adds
    found = sites(model.denoiser)
    print(f"{args.source}, {args.request}: share of the concept-to-target difference left")
    for i, (x, y, p, e) in streams.items():
        x, y, p, e = (None if t is None else t.to(F64) for t in (x, y, p, e))
        attn = model.denoiser.get_submodule(found[i].path)
        for proj, lam in (("k", editor.lambda_k), ("v", editor.lambda_v)):
            w = getattr(attn, found[i].projection(proj)).weight.to(F64)
            m = edit_factor(x, y, lam, p, editor.preserve_scale, F64, e, editor.keep_rtol)
            ones = torch.ones(len(x), 1, dtype=F64)
            # rows are step-major: every step of the sampling runs adds the same rows in turn
            per_step = [
                left(xs, ys, lsq(xs, ys @ w.T), w)
                for xs, ys in zip(x.split(per_call), y.split(per_call), strict=True)
            ]
            print(
                f"  block {i} {proj} ({len(x)} rows): closed {left(x, y, x @ m.T @ w.T, w):.3f}  "
                f"lsq {left(x, y, lsq(x, y @ w.T), w):.3f}  "
                f"affine {left(x, y, lsq(torch.cat([x, ones], 1), y @ w.T), w):.3f}  "
                f"per step {min(per_step):.3f}-{max(per_step):.3f}"
            )
    if args.read:
        read(model, args.request.replace(".edit.", ".eval."), blocks, editor, requests)
    if args.rounds:
        print("in-sample fit refitted on the edited model's own runs:")
        refit_on_own_runs(model, args.request.replace(".edit.", ".eval."), blocks, args.rounds)


if __name__ == "__main__":
    main()
