"""The README's offline Python example on the world runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

# Imported at collection, as every other test module does: imported first inside the example,
# under capsys, Lightning would bind its log handler to that captured stream, which later tests
# find closed ("--- Logging error ---" when this module runs before the CLI tests).
import lightning.pytorch  # noqa: F401

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readmes_world_example_runs_and_writes_its_lora(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [example] = [b for b in blocks if 'Diffusion(source="world-sd1")' in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "circle_lora" / "pytorch_lora_weights.safetensors").exists()
    moved = float(re.search(r"image moved by ([\d.]+)", capsys.readouterr().out)[1])
    assert moved > 0.01  # the edit changes the image of its own concept
