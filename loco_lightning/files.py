"""Result files written atomically: a reader (or a killed run) sees the old file or the new one,
never half of one."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY = ".loco-tmp."  # in the name of every temporary beside a result, and nowhere else


def temporary_prefix(path: Path) -> str:
    """How temporaries for ``path`` begin (hidden, and marked, so a later run can clean them)."""
    return f".{path.name}{TEMPORARY}"


def clean_temporaries(folder: str | Path) -> list[str]:
    """Remove the temporaries a killed run left in ``folder`` (a kill -9 skips the cleanup of
    :func:`atomic_path` and of exports); returns their names. Call it where one run owns the
    folder, before it writes."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TEMPORARY}*")) if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return [p.name for p in stale]


def usual_mode(folder: bool = False) -> int:
    """The permissions a plain ``open`` or ``mkdir`` would give under this process's umask
    (``mkstemp`` and ``mkdtemp`` make private 0600/0700 ones, which would leave results that
    another user of a shared machine cannot read)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same suffix, so writers that go by it still work) that
    replaces ``path`` when the block ends without error, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, usual_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_folder(name: str, path: str | Path) -> None:
    """Refuse an output folder that is an existing file (its writes would fail late, or replace
    the file), naming the setting."""
    if Path(path).exists() and not Path(path).is_dir():
        raise FileExistsError(f"{name}={str(path)!r} is a file; give a folder for the results.")


def write_text(path: str | Path, text: str) -> Path:
    """``path.write_text(text)``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data) -> Path:
    """``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=1) + "\n")


def write_table(table: list[dict], folder: str | Path, name: str) -> None:
    """``<name>.csv`` and ``<name>.json`` in ``folder`` (columns in order of appearance)."""
    folder = Path(folder)
    columns = list(dict.fromkeys(k for row in table for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(table)
    write_text(folder / f"{name}.csv", buffer.getvalue())
    write_json(folder / f"{name}.json", table)


def cell(value) -> str:
    """A table cell: numbers to 3 decimals, 2 significant below 1e-3 (drifts of 1e-7 are not
    0.000), nothing for a missing value."""
    if isinstance(value, float):
        return f"{value:.1e}" if 0 < abs(value) < 1e-3 else f"{value:.3f}"
    return "" if value is None else str(value)


def markdown_table(table: list[dict]) -> str:
    """The table as GitHub markdown (columns in order of appearance)."""
    if not table:
        return "(empty)"
    columns = list(dict.fromkeys(k for row in table for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in table]
    return "\n".join(lines)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as an image file (format from the suffix), atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)
