"""A run folder's files that need no torch: its layout, the damaged-file error, and finding runs (model/run.py loads
and saves the model itself). A bot with a remote sampler reads a run folder with these alone.

    folder = find_run("checkpoints")                 # the most recently trained run
    meta = read_json(folder / META)                  # or the ModelError naming the damaged file
"""

import contextlib
import json
from pathlib import Path

from model.corpus import SEPARATOR, split_blocks
from model.errors import ModelError

META = "proverbot.json"
BLOCKS = "corpus.txt"
WEIGHTS = "model.safetensors"


def is_run(folder: Path) -> bool:
    return (folder / META).is_file() and (folder / WEIGHTS).is_file()


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
    return max(runs, key=lambda folder: (folder / WEIGHTS).stat().st_mtime)


def list_runs(checkpoint_dir: str | Path) -> list[str]:
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    return sorted(p.name for p in checkpoint_dir.iterdir() if is_run(p))


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
