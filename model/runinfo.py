"""A run folder's files that need no torch: its layout, the damaged-file error, and finding runs (model/run.py loads
and saves the model itself). A bot with a remote sampler reads a run folder with these alone.

    folder = find_run("checkpoints")                 # the most recently trained run
    meta = read_json(folder / META)                  # or the ModelError naming the damaged file
    folder = run_folder("checkpoints", name)         # a run a user named, never a path outside checkpoints/
    describe_runs("checkpoints")                     # [RunSummary(name, saved_at, step, base, checkpoint_id)]
"""

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from model.corpus import SEPARATOR, split_blocks
from model.errors import ModelError

META = "proverbot.json"
BLOCKS = "corpus.txt"
WEIGHTS = "model.safetensors"
ADAPTER = "adapter_config.json"  # a LoRA run (model/lora.py): peft's adapter in place of model.safetensors
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_run(folder: Path) -> bool:
    return (folder / META).is_file() and weights_file(folder).is_file()


def weights_file(folder: Path) -> Path:
    """The file a run's weights are in: model.safetensors, or a LoRA run's adapter_model.safetensors."""
    return folder / ADAPTER_WEIGHTS if (folder / ADAPTER).is_file() else folder / WEIGHTS


def find_run(checkpoint_dir: str | Path, run_name: str | None = None) -> Path:
    """The named run, or the most recently trained one when no name is given."""
    checkpoint_dir = Path(checkpoint_dir)
    if run_name:
        folder = checkpoint_dir / run_name
        if not is_run(folder):
            runs = ", ".join(list_runs(checkpoint_dir)) or "none yet"
            raise ModelError(f"No trained run {run_name!r} in {checkpoint_dir}/ ({runs}).")
        return folder
    runs = [checkpoint_dir / name for name in list_runs(checkpoint_dir)]
    if not runs:
        raise ModelError(f"No trained model in {checkpoint_dir}/ yet: run `proverbot train` first.")
    return max(runs, key=lambda folder: weights_file(folder).stat().st_mtime)


def list_runs(checkpoint_dir: str | Path) -> list[str]:
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    return sorted(p.name for p in checkpoint_dir.iterdir() if is_run(p))


def run_folder(checkpoint_dir: str | Path, name: str) -> Path:
    """The folder of the run a user named (/model use NAME, run:NAME), or the ModelError saying what is wrong: only
    a plain folder name of checkpoint_dir is a run name, never a path.

        run_folder("checkpoints", "mybot")       # Path("checkpoints/mybot")
        run_folder("checkpoints", "../etc")      # ModelError: '../etc' is not a run name ...
    """
    checkpoint_dir = Path(checkpoint_dir)
    if (not isinstance(name, str) or not name.strip() or len(name) > 200 or name.startswith(".")
            or any(ch in name for ch in "/\\:") or not name.isprintable()):
        raise ModelError(f"{str(name)[:60]!r} is not a run name: give a run's folder name, as /model list shows.")
    if not is_run(checkpoint_dir / name):
        runs = ", ".join(list_runs(checkpoint_dir)) or "none yet"
        raise ModelError(f"No trained run {name!r} in {checkpoint_dir}/ (the runs: {runs}).")
    return checkpoint_dir / name


@dataclass(frozen=True)
class RunSummary:
    """A run as /model list shows it; step, base and checkpoint_id are None where its proverbot.json is damaged."""

    name: str
    saved_at: datetime              # when its proverbot.json (the checkpoint's last file) was written, UTC
    step: int | None = None
    base: str | None = None
    checkpoint_id: str | None = None


def describe_runs(checkpoint_dir: str | Path) -> list[RunSummary]:
    """Every run of checkpoint_dir, by name, with its step, base model and date."""
    summaries = []
    for name in list_runs(checkpoint_dir):
        meta_path = Path(checkpoint_dir) / name / META
        try:
            saved_at = datetime.fromtimestamp(meta_path.stat().st_mtime, UTC)
        except OSError:     # removed since it was listed
            continue
        try:
            meta = read_json(meta_path)
        except ModelError:
            summaries.append(RunSummary(name, saved_at))
            continue
        step, base, checkpoint_id = meta.get("step"), meta.get("base"), meta.get("checkpoint_id")
        summaries.append(RunSummary(name, saved_at, step if isinstance(step, int) else None,
                                    str(base) if base is not None else None,
                                    str(checkpoint_id) if checkpoint_id is not None else None))
    return summaries


def checkpoint_id(folder: Path) -> str:
    """The checkpoint id in a run folder's proverbot.json ("" when it has none), or the ModelError naming the file."""
    return str(read_json(folder / META).get("checkpoint_id", ""))


def read_meta(folder: Path) -> tuple[dict, str]:
    """A run's proverbot.json and the separator between its texts, or the ModelError naming the file."""
    meta = read_json(folder / META)
    separator = meta.get("separator", SEPARATOR)
    if not isinstance(separator, str):
        raise damaged(folder / META, f"the separator is {separator!r}, not text")
    return meta, separator


def read_blocks(folder: Path, separator: str) -> list[str]:
    """A run's training texts (corpus.txt), to spot copies; none for a run saved without them."""
    if not (folder / BLOCKS).exists():
        return []
    with loading(folder / BLOCKS):
        return split_blocks((folder / BLOCKS).read_text(encoding="utf-8"), separator, folder / BLOCKS, False)


def read_json(path: Path) -> dict:
    """A JSON object from a run's file (config, tokenizer, proverbot.json), or the ModelError naming it."""
    with loading(path):
        value = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(value, dict):
            raise TypeError(f"a JSON {type(value).__name__}, not an object")
        return value


@contextlib.contextmanager
def loading(path: Path):
    """Reading one file of a run: any failure inside is the ModelError that names it as damaged.

    with loading(folder / "model.safetensors"):
        model = GPT2LMHeadModel.from_pretrained(folder)
    """
    if not path.is_file():
        raise damaged(path, "the file is missing")
    try:
        yield
    except Exception as err:  # json, safetensors, tokenizers and torch each raise their own kinds
        raise damaged(path, err) from err


def damaged(path: Path, reason: Exception | str) -> ModelError:
    """The one line for a corrupt or incomplete file of a run: the file and a short reason."""
    text = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    text = f"no key {text}" if isinstance(reason, KeyError) else text.split(". ")[0][:160].rstrip(".")
    return ModelError(f"The checkpoint cannot be loaded: {path} is corrupt or incomplete ({text}); "
                      "train again or restore it.")
