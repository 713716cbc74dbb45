"""The run folder: `checkpoints/<run_name>/` in Hugging Face layout, loadable by plain transformers.

    config.json, model.safetensors, generation_config.json   the model and its sampling defaults
    tokenizer.json, tokenizer_config.json, ...                the tokenizer
    proverbot.json                                            separator, base, step, checkpoint id
    corpus.txt                                                the training blocks (to spot copies)
    training_state.pt                                         optimizer, step, RNG: exact resume
    step-<n>/                                                 older checkpoints, when max_checkpoints > 1

Files are written to a staging folder first and moved into place, the training state last, so a crash
mid-save leaves the previous checkpoint readable.
"""

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, GPT2LMHeadModel, PreTrainedTokenizerFast

from model.corpus import split_blocks
from model.errors import ModelError
from model.speed import fuse_gelu, quantize_int8, sample_dtype
from model.tokenizer import separator_ids

log = logging.getLogger(__name__)

META = "proverbot.json"
STATE = "training_state.pt"
BLOCKS = "corpus.txt"
WEIGHTS = "model.safetensors"


@dataclass
class Run:
    folder: Path
    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerFast
    separator: str
    blocks: list[str]
    meta: dict = field(default_factory=dict)
    dtype: str = "float32"  # the weights' number format (model.speed); runs to train or save are float32

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def checkpoint_id(self) -> str:
        return self.meta.get("checkpoint_id", "")


def generation_defaults(tokenizer, separator: str, n_ctx: int) -> GenerationConfig:
    """gpt-2-simple's sampling defaults (temperature 0.7, no top-k/top-p), stopping at the separator."""
    stop = [tokenizer.eos_token_id]
    sep = separator_ids(tokenizer, separator)
    if len(sep) == 1:
        stop.append(sep[0])
    return GenerationConfig(
        do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=min(1023, n_ctx - 1),
        eos_token_id=stop, pad_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )


def save_run(run: Run, state: dict | None = None, max_checkpoints: int = 1) -> str:
    """Write the run folder; returns the new checkpoint id (a hash of the weights)."""
    folder = run.folder
    staging = folder / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = run.model
    model.generation_config = generation_defaults(run.tokenizer, run.separator, model.config.n_positions)
    model.save_pretrained(staging, safe_serialization=True)
    run.tokenizer.save_pretrained(staging)
    (staging / BLOCKS).write_text(f"\n{run.separator}\n".join(run.blocks) + "\n", encoding="utf-8")
    run.meta["checkpoint_id"] = file_hash(staging / WEIGHTS)
    run.meta["separator"] = run.separator
    (staging / META).write_text(json.dumps(run.meta, indent=2) + "\n", encoding="utf-8")
    if state is not None:
        torch.save(state, staging / STATE)
    _keep_old_checkpoint(folder, max_checkpoints)
    for path in sorted(staging.iterdir(), key=lambda p: p.name == STATE):
        os.replace(path, folder / path.name)
    staging.rmdir()
    if state is None:
        (folder / STATE).unlink(missing_ok=True)
    return run.meta["checkpoint_id"]


def _keep_old_checkpoint(folder: Path, max_checkpoints: int) -> None:
    """gpt-2-simple's max_checkpoints: keep the previous ones as step-<n>/ folders, oldest pruned."""
    if max_checkpoints <= 1 or not (folder / META).exists():
        return
    step = json.loads((folder / META).read_text()).get("step", 0)
    old = folder / f"step-{step:07d}"
    shutil.rmtree(old, ignore_errors=True)
    old.mkdir()
    for path in folder.iterdir():
        if path.is_file():
            shutil.copy2(path, old / path.name)
    kept = sorted(folder.glob("step-*"))
    for stale in kept[: max(0, len(kept) - (max_checkpoints - 1))]:
        shutil.rmtree(stale)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def is_run(folder: Path) -> bool:
    return (folder / META).is_file() and (folder / WEIGHTS).is_file()


def find_run(checkpoint_dir: str | Path, run_name: str | None = None) -> Path:
    """The named run, or the most recently trained one when no name is given."""
    checkpoint_dir = Path(checkpoint_dir)
    if run_name:
        folder = checkpoint_dir / run_name
        if not is_run(folder):
            raise ModelError(f"No trained run {run_name!r} in {checkpoint_dir}/ ({', '.join(list_runs(checkpoint_dir)) or 'none yet'}).")
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


def load_run(folder: str | Path, device: str | torch.device = "cpu", dtype: str = "float32") -> Run:
    """A run folder's model on `device`. `dtype` (model.speed.SAMPLE_DTYPES; "auto": the fastest format that
    keeps quality there) is for sampling: a run to train or save must be loaded as float32."""
    folder = Path(folder)
    if not is_run(folder):
        raise ModelError(f"{folder} is not a proverbot run folder (no {META} or {WEIGHTS}).")
    device = torch.device(device)
    dtype = sample_dtype(dtype, device)
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        tokenizer = AutoTokenizer.from_pretrained(folder)
        weights = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        model = fuse_gelu(GPT2LMHeadModel.from_pretrained(folder, dtype=weights).to(device).eval())
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"{folder}: the checkpoint cannot be loaded ({err}).") from err
    if dtype == "int8":
        model = quantize_int8(model)
    separator = meta.get("separator", "==========")
    blocks_file = folder / BLOCKS
    blocks = split_blocks(blocks_file.read_text(encoding="utf-8"), separator, blocks_file, False) if blocks_file.exists() else []
    log.info("loaded run %s (checkpoint %s) on %s in %s", folder.name, meta.get("checkpoint_id"), device, dtype)
    return Run(folder=folder, model=model, tokenizer=tokenizer, separator=separator, blocks=blocks, meta=meta, dtype=dtype)


def load_state(folder: Path) -> dict | None:
    path = folder / STATE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
