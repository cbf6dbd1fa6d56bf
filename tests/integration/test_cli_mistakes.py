"""The catalogue of a user's mistakes on the command line (#14): each one exits with status 2 and
one ``loco: error:`` line that names the offending value, with no traceback and nothing written
over. Run in-process through the console script's ``entry``, so the catalogue costs the model
loads, not a Python start per case."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from loco_lightning.cli import entry
from loco_lightning.editing.edits import WeightEdit

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
LOCALIZE = ["localize", "--config", "configs/localize/world_shape.yaml", *QUIET]
LOCALIZE += ["--data.window_sizes", "[1]", "--data.seeds", "[0]", "--model.diffusion.steps", "2"]
EDIT = ["edit", "--config", "configs/edit/world_style.yaml", *QUIET]
EDIT += ["--model.diffusion.steps", "2", "--data.seeds", "[0]"]
TRACE = ["trace", "--config", "configs/trace/world_style.yaml", *QUIET]
SAMPLE = ["sample", "--config", "configs/sample/world_shape.yaml", *QUIET, "--data.prompts", "[a]"]
ESD = ["esd", "--config", "configs/esd/world_style.yaml", *QUIET]
CONTRIBUTION = ["contribution", "--config", "configs/contribution/world_style.yaml", *QUIET]


def editor(cls: str = "LocoEdit", **init) -> list[str]:
    if cls != "Saved":
        init.setdefault("sites", [1])
    return ["--model.editors", json.dumps({"x": {"class_path": cls, "init_args": init}})]


def yaml(folder: Path, text: str) -> list[str]:
    """A second config file: how a non-finite number arrives (YAML's ``.nan``, ``.inf``)."""
    (folder / "more.yaml").write_text(text)
    return ["--config", str(folder / "more.yaml")]


def yaml_editor(folder: Path, cls: str, **init: str) -> list[str]:
    args = ", ".join(f"{k}: {v}" for k, v in {"sites": "[1]", **init}.items())
    return yaml(folder, f"model: {{editors: {{x: {{class_path: {cls}, init_args: {{{args}}}}}}}}}")


def pair(original: str, target: str) -> list[str]:
    return ["--data.pairs", json.dumps([{"original": original, "target": target}])]


def request(concept: str, target: str, *templates: str) -> list[str]:
    req = {
        "concept": concept,
        "target": target,
        "templates": list(templates or ["a red {} circle"]),
    }
    return ["--model.requests", json.dumps([req])]


def selection(folder: Path, window: list[int], **made) -> list[str]:
    """A ``loco localize`` result folder as another model's run would have left it."""
    made = {"family": "sd1", "source": "elsewhere", "dtype": "float32", "weights": "0" * 16} | made
    record = {
        "window": window,
        "best": {"1": {"start": window[0], "score": 0.1}},
        "diffusion": made,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "selection.json").write_text(json.dumps(record))
    return ["--model.locogen", str(folder)]


def other_family_edit(path: Path) -> list[str]:
    delta = {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(2, 2)}
    WeightEdit(delta, {"family": "sdxl"}, "unet").save(path)
    return editor("Saved", path=str(path))


# (id, argv from tmp (a fresh folder), what the error line must name)
CASES = [
    ("steps-zero", lambda t: LOCALIZE + ["--model.diffusion.steps", "0"], "steps=0"),
    ("steps-negative", lambda t: LOCALIZE + ["--model.diffusion.steps=-3"], "steps=-3"),
    ("guidance-nan", lambda t: LOCALIZE + ["--model.diffusion.guidance", "nan"], "'nan' is not"),
    ("guidance-inf", lambda t: LOCALIZE + yaml(t, "model: {diffusion: {guidance: .inf}}"), "=inf"),
    ("margin-negative", lambda t: LOCALIZE + ["--model.margin=-1"], "margin=-1.0"),
    ("margin-nan", lambda t: LOCALIZE + yaml(t, "model: {margin: .nan}"), "margin=nan"),
    ("sizes-empty", lambda t: LOCALIZE + ["--data.window_sizes", "[]"], "window_sizes is empty"),
    ("sizes-repeat", lambda t: LOCALIZE + ["--data.window_sizes", "[1,1]"], "repeats [1]"),
    ("sizes-too-big", lambda t: LOCALIZE + ["--data.window_sizes", "[99]"], "[99] outside 1..7"),
    ("seeds-empty", lambda t: LOCALIZE + ["--data.seeds", "[]"], "data.seeds is empty"),
    ("seeds-negative", lambda t: LOCALIZE + ["--data.seeds", "[-1]"], "data.seeds=[-1]"),
    ("batch-zero", lambda t: LOCALIZE + ["--data.batch_size", "0"], "batch_size=0"),
    ("pair-same", lambda t: LOCALIZE + pair("a red circle", "a red circle"), "'a red circle'"),
    ("pair-empty", lambda t: LOCALIZE + pair(" ", "a red circle"), "empty original"),
    ("pairs-missing", lambda t: LOCALIZE + ["--data.pairs", "no/such.yaml"], "no/such.yaml"),
    ("pairs-none", lambda t: LOCALIZE + ["--data.pairs", "[]"], "data.pairs is empty"),
    ("unknown-word", lambda t: LOCALIZE + pair("a red circle!", "a circle"), "'circle!'"),
    ("source-missing", lambda t: LOCALIZE + ["--model.diffusion.source", "no/such"], "'no/such'"),
    ("family-wrong", lambda t: LOCALIZE + ["--model.diffusion.family", "sd2"], "sd2"),
    ("dtype-typo", lambda t: LOCALIZE + ["--model.diffusion.dtype", "float64"], "float64"),
    ("scheduler-typo", lambda t: LOCALIZE + ["--model.diffusion.scheduler", "DDIMS"], "DDIMS"),
    ("clip-missing", lambda t: LOCALIZE + ["--model.clip", "no/such/clip"], "'no/such/clip'"),
    (
        "reader-without-readers",
        lambda t: (
            LOCALIZE
            + ["--model.diffusion.source", "miniature", "--model.diffusion.family", "sd1"]
            + [
                "--model.clip",
                "worldclip",
                "--model.score",
                "reader",
                "--model.require_signal",
                "false",
            ]
        ),
        "score: reader",
    ),
    ("objective-typo", lambda t: LOCALIZE + ["--model.objective", "erase"], "erase"),
    ("option-typo", lambda t: LOCALIZE + ["--model.marginn", "0.1"], "--model.marginn"),
    ("config-missing", lambda t: ["localize", "--config", "no/such.yaml"], "no/such.yaml"),
    ("job-typo", lambda t: ["localise", "--help"], "'localise': did you mean 'localize'"),
    ("output-is-file", lambda t: LOCALIZE + ["--model.output_dir", "README.md"], "'README.md'"),
    (
        "output-of-another-sweep",
        lambda t: (
            (t / "out").mkdir()
            or (t / "out" / "sweep.json").write_text('{"seeds": [7]}')
            and LOCALIZE + ["--model.output_dir", str(t / "out")]
        ),
        "holds results of a different sweep",
    ),
    ("editors-none", lambda t: EDIT + ["--model.editors", "{}"], "model.editors is empty"),
    ("lambda-negative", lambda t: EDIT + editor(lambda_k=-1), "lambda_k=-1.0"),
    ("lambda-inf", lambda t: EDIT + yaml_editor(t, "LocoEdit", lambda_v=".inf"), "lambda_v=inf"),
    ("preserve-nan", lambda t: EDIT + yaml_editor(t, "LocoEdit", preserve_scale=".nan"), "=nan"),
    ("site-twice", lambda t: EDIT + editor(sites=[1, 1]), "[1] more than once"),
    ("site-missing", lambda t: EDIT + editor(sites=[99]), "site(s) [99]"),
    ("key-tokens-typo", lambda t: EDIT + editor(key_tokens="lst"), "key_tokens: 'lst' is not"),
    ("editor-typo", lambda t: EDIT + editor("LocoEdits"), "LocoEdits"),
    ("uce-nan", lambda t: EDIT + yaml_editor(t, "UCE", erase_scale=".nan"), "erase_scale=nan"),
    ("neurons-too-many", lambda t: EDIT + editor("Neurons", k=100000), "k=100000"),
    ("neurons-none", lambda t: EDIT + editor("Neurons", k=0), "k=0"),
    (
        "locogen-missing",
        lambda t: EDIT + editor(sites="locogen") + ["--model.locogen", "no/such"],
        "no/such/selection.json",
    ),
    (
        "locogen-other-weights",
        lambda t: EDIT + editor(sites="locogen") + selection(t / "loc", [2]),
        "made on another model",
    ),
    (
        "locogen-other-family",
        lambda t: EDIT + editor(sites="locogen") + selection(t / "loc", [2], family="sdxl"),
        "family sdxl there, sd1 here",
    ),
    (
        "locogen-window-outside",
        lambda t: EDIT + editor(sites="locogen") + selection(t / "loc", [8, 9], dtype="float16"),
        "sites up to 9 there",
    ),
    ("saved-missing", lambda t: EDIT + editor("Saved", path="no/such.st"), "no/such.st"),
    ("saved-other-family", lambda t: EDIT + other_family_edit(t / "e.safetensors"), "'sdxl'"),
    ("requests-missing", lambda t: EDIT + ["--model.requests", "no/such.yaml"], "no/such.yaml"),
    (
        "request-same",
        lambda t: EDIT + editor() + request("striped", "striped"),
        "concept == target",
    ),
    ("request-empty", lambda t: EDIT + editor() + request(" ", "a circle"), "concept is empty"),
    (
        "template-blind",
        lambda t: EDIT + editor() + request("striped", "", "a circle"),
        "'a circle'",
    ),
    (
        "request-unknown-word",
        lambda t: EDIT + editor() + request("glorp!", ""),
        "'glorp!'",
    ),
    ("groups-typo", lambda t: EDIT + editor() + ["--data.groups", "[efficacyy]"], "efficacyy"),
    ("prompts-missing", lambda t: EDIT + editor() + ["--data.prompts", "no/such.yaml"], "no/such"),
    ("edit-output-file", lambda t: EDIT + editor() + ["--model.output_dir", "README.md"], "README"),
    ("trace-noise", lambda t: TRACE + ["--model.noise_scale=-1"], "noise_scale=-1.0"),
    ("trace-chunk", lambda t: TRACE + ["--model.chunk", "0"], "chunk=0"),
    ("trace-seeds", lambda t: TRACE + ["--data.seeds", "[]"], "data.seeds is empty"),
    ("trace-tokens", lambda t: TRACE + ["--model.text_tokens", "first"], "first"),
    ("contribution-k0", lambda t: CONTRIBUTION + ["--model.top_k", "0"], "model.top_k=0"),
    ("contribution-k", lambda t: CONTRIBUTION + ["--model.top_k", "9"], "has 7 sites; choose 1..7"),
    (
        "contribution-locogen",
        lambda t: CONTRIBUTION + ["--model.locogen", str(t), "--data.seeds", "[0]"],
        "has no selection.json",
    ),
    (
        "variant-missing",
        lambda t: SAMPLE + ["--model.variants", '{"x": "no/such/lora"}'],
        "'no/such/lora' does not exist",
    ),
    (
        "variant-unknown",
        lambda t: SAMPLE + ["--model.variants", '{"x": "README.md"}'],
        "'README.md' is neither",
    ),
    ("variant-named-base", lambda t: SAMPLE + ["--model.variants", '{"base": "x"}'], "'base'"),
    ("sample-no-prompts", lambda t: SAMPLE + ["--data.prompts", "[]"], "data.prompts is empty"),
    ("esd-no-steps", lambda t: ESD + ["--trainer.max_steps", "0"], "max_steps=0"),
]


def run_loco(argv: list[str], root: Path) -> tuple[int, str]:
    """``loco <argv>`` in this process: its exit status and what it wrote to stderr."""
    stderr = io.StringIO()
    old = sys.argv
    sys.argv = ["loco", *argv]
    if len(argv) > 2 and argv[1] == "--config" and "--help" not in argv:
        sys.argv += ["--trainer.default_root_dir", str(root)]  # LightningCLI's config.yaml
        if "--model.output_dir" not in argv:
            sys.argv += ["--model.output_dir", str(root / "run")]
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            entry()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = old
    return code, stderr.getvalue()


@pytest.mark.parametrize(("make", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_naming_the_value_and_exit_status_2(make, names, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in Path(".").glob("*") if p.is_file()}
    code, stderr = run_loco(make(tmp_path), tmp_path)
    errors = [line for line in stderr.splitlines() if line.startswith("loco: error:")]
    assert code == 2 and len(errors) == 1, stderr[-3000:]
    assert names in errors[0], errors[0]
    assert "Traceback" not in stderr and "usage:" not in stderr
    assert before == {p: p.stat().st_mtime_ns for p in Path(".").glob("*") if p.is_file()}
