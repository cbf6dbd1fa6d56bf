"""Sweep results: per-item rows appended as they are made, the window table, and the selection.

Rows go to ``items.rank<R>.jsonl`` (append + flush after every batch), so an interrupted sweep
resumes where it stopped and DDP ranks never share a file; sampler padding duplicates are dropped
by key when the table is built.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loco_lightning.files import clean_temporaries, write_json

Objective = Literal["remove", "update"]


class ResultStore:
    """The per-item rows of one sweep folder.

    Args:
        folder: the sweep's output folder (stable across restarts, so reruns resume).
        fingerprint: what produced the rows (prompts, seeds, model, scorer, steps...). A folder
            made with a different fingerprint is refused instead of being mixed in.
        ignore: settings that do not decide a row (where the folder is, how windows are
            selected from the rows): they may change between runs, and are left out of the
            comparison even where an older ``sweep.json`` recorded them.
    """

    def __init__(self, folder: str | Path, fingerprint: dict, ignore: tuple[str, ...] = ()) -> None:
        self.folder = Path(folder)
        self.ignore = ignore
        self.fingerprint = {k: v for k, v in fingerprint.items() if k not in ignore}

    def open(self) -> None:
        """Create the folder, or check that it holds the same sweep."""
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "sweep.json"
        if meta.exists():
            old = {k: v for k, v in json.loads(meta.read_text()).items() if k not in self.ignore}
            new = json.loads(json.dumps(self.fingerprint))
            if old != new:
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ValueError(
                    f"{self.folder} holds results of a different sweep (changed: {changed}); "
                    "set a new output_dir, or delete the folder to start over."
                )
        else:
            write_json(meta, self.fingerprint)
        clean_temporaries(self.folder)
        for shard in self.folder.glob("items.rank*.jsonl"):
            repair(shard)

    def append(self, rows: list[dict], rank: int) -> None:
        with open(self.folder / f"items.rank{rank}.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()

    def rows(self) -> list[dict]:
        """Every row written so far by any rank, one per key (a line cut by a kill is skipped)."""
        out: dict[str, dict] = {}
        for path in sorted(self.folder.glob("items.rank*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                out.setdefault(row["key"], row)
        return list(out.values())

    def done(self) -> set[str]:
        return {row["key"] for row in self.rows()}


def repair(shard: Path) -> None:
    """Cut a row that a kill left half-written at the end of a shard (its item is then
    recomputed); otherwise the next append would glue a row onto it and lose both."""
    data = shard.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(shard, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return mean, math.sqrt(var)


def aggregate(
    rows: list[dict],
    scores: tuple[str, ...],
    by: tuple[str, ...] = ("m", "start"),
    keep: tuple[str, ...] = ("window",),
) -> list[dict]:
    """One table row per group (LocoGen: window size and start; causal tracing: layer), with the
    mean and spread of each score over prompts and seeds; ``keep`` columns are copied along."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    table = []
    for key, group in sorted(groups.items()):
        entry = dict(zip(by, key)) | {k: group[0][k] for k in keep} | {"n": len(group)}
        for name in scores:
            values = [r[name] for r in group if r.get(name) is not None]
            if values:
                entry[f"{name}_mean"], entry[f"{name}_std"] = _stats(values)
        table.append(entry)
    return table


@dataclass(frozen=True)
class Selection:
    """What LocoGen concluded.

    Attributes:
        best: per window size m, the best window's start and score.
        original: score of the empty window (the concept untouched).
        reference: score of the all-sites window (the target prompt everywhere).
        smallest_m: the smallest m whose best window comes within the margin of the reference,
            or None if none does.
        window: the sites of that window (empty if none).
    """

    best: dict[int, tuple[int, float]]
    original: float
    reference: float
    smallest_m: int | None
    window: tuple[int, ...]


def select(
    table: list[dict], n_sites: int, objective: Objective, score: str, margin: float
) -> Selection:
    """Pick windows as the paper does: argmin of the concept's score for removal, argmax of the
    target's score for a fact update; then the smallest m within ``margin`` of the reference.

    ``margin`` is a fraction of the gap between the original and the reference score, so it means
    the same for every scorer. Only windows generated on every prompt and seed of the references
    compete (an adaptive search leaves the others after its first rounds).
    """
    key = f"{score}_mean"
    full = next(r["n"] for r in table if (r["m"], r["start"]) == (0, 0))
    by = {(r["m"], r["start"]): r[key] for r in table if key in r and r["n"] == full}
    original, reference = by[(0, 0)], by[(n_sites, 0)]
    sign = 1.0 if objective == "remove" else -1.0
    best = {}
    for m in sorted({m for m, _ in by if 0 < m < n_sites}):
        starts = [(s, v) for (mm, s), v in by.items() if mm == m]
        best[m] = min(starts, key=lambda sv: sign * sv[1])
    tolerance = margin * abs(original - reference)
    smallest = next(
        (m for m, (_, v) in sorted(best.items()) if sign * (v - reference) <= tolerance), None
    )
    window = tuple(range(best[smallest][0], best[smallest][0] + smallest)) if smallest else ()
    return Selection(best, original, reference, smallest, window)


class NoSignalError(ValueError):
    """The all-sites reference does not move the score beyond noise: nothing to localize."""


def check_reference(
    rows: list[dict], n_sites: int, objective: Objective, score: str
) -> tuple[float, float]:
    """Refuse to select when the target prompt everywhere does not move the score its way.

    Every window is judged against the all-sites reference, so if giving every site the target
    prompt does not lower the concept's score (raise the target's, for facts) by more than its
    spread over seeds, the scorer cannot see the concept on this model and an argmin would pick
    noise. The shift is paired per prompt and seed; its spread is the standard deviation of the
    per-seed mean shifts (with one seed: the standard error over prompts).

    Returns:
        The mean shift (positive: the objective's direction) and its spread.

    Raises:
        NoSignalError: the shift is not larger than its spread.
    """
    sign = 1.0 if objective == "remove" else -1.0
    cells: dict[tuple[int, int], dict[int, float]] = {}
    for r in rows:
        if r.get(score) is not None and r["start"] == 0 and r["m"] in (0, n_sites):
            cells.setdefault((r["pair"], r["seed"]), {})[r["m"]] = r[score]
    shifts = {k: sign * (v[0] - v[n_sites]) for k, v in cells.items() if len(v) == 2}
    if not shifts:
        raise NoSignalError(f"no {score} scores for the original and all-sites windows")
    seeds = sorted({seed for _, seed in shifts})
    if len(seeds) > 1:
        per_seed = [[d for (_, s), d in shifts.items() if s == seed] for seed in seeds]
        mean, spread = _stats([sum(v) / len(v) for v in per_seed])
    else:
        mean, std = _stats(list(shifts.values()))
        spread = std / math.sqrt(len(shifts))
    if mean <= spread:
        direction = "lower" if objective == "remove" else "raise"
        raise NoSignalError(
            f"the all-sites reference moved the {score} score by {-sign * mean:+.3f} (spread "
            f"{spread:.3f} over {len(seeds)} seed(s)): the target prompt everywhere does not "
            f"{direction} it beyond noise, so no window can be told apart. The scorer does not "
            "see this concept on this model: check the target prompts, score with a CLIP that "
            "knows the concept (model.clip), or add seeds (data.seeds)."
        )
    return mean, spread
