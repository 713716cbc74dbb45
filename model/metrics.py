"""metrics.csv in a run folder: the loss curves, one row per logged step (every print_every) and per validation.

    with MetricsLog(folder / METRICS, step=trainer.step) as metrics:    # rows past `step` are dropped first
        metrics.write(step=10, tokens=20480, loss=3.21, lr=1e-3, tokens_per_s=5120.0)
    rows = read_metrics(folder / METRICS)                              # [Row(step=10, tokens=20480, ...), ...]
    best = best_validation(rows)                                       # the row the trainer counts as best

Columns: step; tokens (trained on so far: step x tokens a step); loss (the step's training loss); val_loss (empty
where the step was not validated); lr (the learning rate the step trained at); tokens_per_s (the average since
this `proverbot train` started); elapsed_s (seconds of training since the run began, summed over its resumes).
Each row is flushed as it is written, so a killed run keeps its rows. A resumed run appends, after dropping the
rows past its checkpoint's step (that training was lost and is done again); a fresh run (step 0) starts the file
anew. Only csv here: `proverbot plot` reads the file without torch.
"""

import csv
import logging
import math
import os
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from model.errors import ModelError

log = logging.getLogger(__name__)

METRICS = "metrics.csv"
MIN_IMPROVEMENT = 1e-4  # a validation loss counts as a new best when it is this much below the best so far


@dataclass
class Row:
    step: int
    tokens: int
    loss: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None
    elapsed_s: float | None = None


COLUMNS = tuple(f.name for f in fields(Row))


def improves(val_loss: float, best: float) -> bool:
    """Whether a validation loss is a new best (the trainer keeps those weights when patience runs out)."""
    return val_loss < best - MIN_IMPROVEMENT


def best_validation(rows: list[Row]) -> Row | None:
    """The row whose validation loss the trainer counts as its best (the first of equals), None without any."""
    best = None
    for row in rows:
        if row.val_loss is not None and improves(row.val_loss, math.inf if best is None else best.val_loss):
            best = row
    return best


def read_metrics(path: Path) -> list[Row]:
    """The rows of a metrics.csv. A row that cannot be read (cut short by a kill, garbled by a crash, edited by
    hand) is skipped with a warning naming its line; a file that is no metrics.csv (another header) is a ModelError."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise ModelError(f"Cannot read {path}: {err.strerror}.") from None
    if lines and _cells_of(lines[0]) != list(COLUMNS):
        raise ModelError(f"{path} is not a metrics file that proverbot wrote: its first line is {lines[0][:80]!r}, "
                         f"not {','.join(COLUMNS)!r}. Move it away (training starts a new one).")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        row = _parse(_cells_of(line))
        if row is None:
            log.warning("%s, line %d: not a row of %d numbers, skipped", path, number, len(COLUMNS))
        else:
            rows.append(row)
    return rows


def _cells_of(line: str) -> list[str]:
    """A line's cells (CSV quoting allowed, as a spreadsheet may save it); none when it is not CSV."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return []


def _parse(cells: list[str]) -> Row | None:
    """A Row from a line's cells, None when it is not one: whole numbers for step and tokens, numbers or empty
    cells for the rest."""
    if len(cells) != len(COLUMNS):
        return None
    try:
        step, tokens = int(cells[0]), int(cells[1])
        values = [float(cell) if cell else None for cell in cells[2:]]
    except ValueError:
        return None
    return Row(step, tokens, *values) if step >= 0 and tokens >= 0 else None


class MetricsLog:
    """metrics.csv, opened to append the rows of a training that starts at `step` (see the module's docstring)."""

    def __init__(self, path: Path, step: int):
        kept = [row for row in read_metrics(path) if row.step <= step] if path.exists() else []
        self.elapsed_before = next((row.elapsed_s for row in reversed(kept) if row.elapsed_s is not None), 0.0)
        self.tokens_before = kept[-1].tokens if kept else 0
        self.started = time.perf_counter()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _rewrite(path, kept)
            self.file = open(path, "a", encoding="utf-8", newline="")
        except OSError as err:
            raise ModelError(f"Cannot write {path}: {err.strerror}.") from None
        self.writer = csv.writer(self.file)

    def write(self, step: int, tokens: int, loss: float | None = None, val_loss: float | None = None,
              lr: float | None = None, tokens_per_s: float | None = None) -> None:
        """One row, flushed; elapsed_s is filled in."""
        elapsed = self.elapsed_before + time.perf_counter() - self.started
        self.writer.writerow(_cells(Row(step, tokens, loss, val_loss, lr, tokens_per_s, elapsed)))
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rewrite(path: Path, rows: list[Row]) -> None:
    """The header and `rows`, written beside `path` and moved over it: the file is never half written."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(_cells(row) for row in rows)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _cells(row: Row) -> list[str]:
    """A row as text: whole numbers as they are, the others to 7 significant digits, None as an empty cell."""
    return ["" if value is None else str(value) if isinstance(value, int) else f"{value:.7g}" for value in astuple(row)]
