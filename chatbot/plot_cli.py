"""`proverbot plot`: a run's loss curves, from its metrics.csv (model/metrics.py), drawn as an image.

    proverbot plot run1 --output curves.png      # training and validation loss against step, the best marked

matplotlib (Agg, no display needed) is imported by this command alone; the image is drawn into a temporary file
beside --output and renamed over it, so --output is never half written.
"""

import os
from pathlib import Path

from chatbot.config import load_settings
from model.errors import ModelError
from model.metrics import METRICS, Row, best_validation, read_metrics
from model.runinfo import find_run
from proverbot_errors import ProverbotError

FORMATS = ("png", "svg", "pdf")


def add_commands(commands) -> None:
    """Register `plot` on the CLI's subparsers."""
    plot = commands.add_parser("plot", help="draw a run's training and validation loss (its metrics.csv)",
                               description="Draw the training and validation loss of a run against step, from the "
                               "metrics.csv its training wrote, with the best validation loss marked.")
    plot.add_argument("run", nargs="?", metavar="RUN", help="run name (default: settings' run_name, else the most "
                      "recently trained)")
    plot.add_argument("--checkpoint-dir", help="where run folders live (default: settings' checkpoint_dir)")
    plot.add_argument("--output", type=Path, help="the image: .png, .svg or .pdf (default: curves.png in the run "
                      "folder)")
    plot.set_defaults(func=cmd_plot)


def cmd_plot(args) -> None:
    settings = load_settings()
    folder = find_run(args.checkpoint_dir or settings.checkpoint_dir, args.run or settings.run_name)
    output = args.output or folder / "curves.png"
    kind = check_output(output)
    rows = run_metrics(folder)
    best = best_validation(rows)
    write_at_once(output, lambda out: draw(rows, best, folder.name, out, kind))
    note = f"; best validation loss {best.val_loss:.3f} at step {best.step}" if best else "; no validation loss"
    print(f"Wrote {output}: {len(rows)} rows of {folder / METRICS}, steps {rows[0].step} to {rows[-1].step}{note}.")


def run_metrics(folder: Path) -> list[Row]:
    """The run's metrics.csv rows; a run without any is one line saying why."""
    path = folder / METRICS
    if not path.is_file():
        raise ModelError(f"{folder} has no {METRICS}: runs trained before proverbot recorded one, and imported runs, "
                         "have none; train (or resume) the run to record its losses.")
    rows = [row for row in read_metrics(path) if row.loss is not None or row.val_loss is not None]
    if not rows:
        raise ModelError(f"{path} holds no losses yet: training writes a row every --print-every steps and at every "
                         "validation; train the run further.")
    return rows


def check_output(output: Path) -> str:
    """The image format --output names (its extension), or one line on what is wrong with it, before any work."""
    where = f"--output {output}"
    if output.is_dir():
        raise ProverbotError(f"{where} is a folder; name a file in it, e.g. {output / 'curves.png'}.")
    if not output.parent.is_dir():
        raise ProverbotError(f"{where}: the folder {output.parent} does not exist; create it first.")
    kind = output.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise ProverbotError(f"{where}: name a .png, .svg or .pdf file (the extension picks the format).")
    return kind


def write_at_once(output: Path, write) -> None:
    """Call write(file) on a temporary file beside `output`, then rename it over `output`; removed on error."""
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        out = open(partial, "xb")
    except OSError as err:
        raise ProverbotError(f"--output {output}: cannot write in the folder {output.parent} ({err.strerror}).") \
            from None
    try:
        with out:
            write(out)
        os.replace(partial, output)
    except OSError as err:
        raise ProverbotError(f"--output {output}: cannot write it ({err.strerror}).") from None
    finally:
        partial.unlink(missing_ok=True)


def draw(rows: list[Row], best: Row | None, title: str, out, kind: str) -> None:
    """Training loss (a line) and validation loss (points joined) against step, the best validation ringed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    trained = [row for row in rows if row.loss is not None]
    validated = [row for row in rows if row.val_loss is not None]
    axes.plot([r.step for r in trained], [r.loss for r in trained], label="training loss", linewidth=1)
    if validated:
        axes.plot([r.step for r in validated], [r.val_loss for r in validated], "o-", label="validation loss",
                  markersize=3)
    if best:
        axes.plot([best.step], [best.val_loss], "*", color="crimson", markersize=14,
                  label=f"best validation: {best.val_loss:.3f} at step {best.step}")
    axes.set(title=title, xlabel="step", ylabel="loss (cross-entropy per token)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(out, format=kind, dpi=120)
