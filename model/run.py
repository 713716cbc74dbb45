"""The run folder: `checkpoints/<run_name>/` in Hugging Face layout, loadable by plain transformers.

    config.json, model.safetensors, generation_config.json   the model and its sampling defaults
    tokenizer.json, tokenizer_config.json, ...                the tokenizer
    proverbot.json                                            separator, base, step, checkpoint ids, validation split
    corpus.txt                                                the training blocks (to spot copies)
    training_state.pt                                         optimizer, step, RNG: exact resume
    step-<n>/                                                 older checkpoints, when max_checkpoints > 1

Files are written to a staging folder first and moved into place, proverbot.json last: a save cut short
while writing leaves the previous checkpoint, one cut short while moving is completed by `finish_save`.
A corrupt or incomplete file is one ModelError line naming it (model.runinfo: the files a run folder holds, no torch).
"""

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from model.errors import ModelError
from model.runinfo import (ADAPTER, ADAPTER_WEIGHTS, BLOCKS, META, WEIGHTS, is_run, loading, read_blocks, read_json,
                           read_meta, weights_file)
from model.speed import fuse_gelu, quantize_int8, sample_dtype
from model.tokenizer import separator_ids

log = logging.getLogger(__name__)

STATE = "training_state.pt"
STAGING = ".staging"
STATE_KEYS = ("optimizer", "step", "best_val", "bad_evals", "batch_rng", "torch_rng")


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
    staging = folder / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model = run.model
    model.generation_config = generation_defaults(run.tokenizer, run.separator, model.config.n_positions)
    adapter = hasattr(model, "peft_config")  # a LoRA run (model/lora.py)
    for stale in (WEIGHTS,) if adapter else (ADAPTER, ADAPTER_WEIGHTS):  # --overwrite of the other kind of run
        (folder / stale).unlink(missing_ok=True)
    if adapter:
        from model.lora import save_adapter

        save_adapter(model, staging, run.meta["base"])
    else:
        model.save_pretrained(staging, safe_serialization=True)
    run.tokenizer.save_pretrained(staging)
    (staging / BLOCKS).write_text(f"\n{run.separator}\n".join(run.blocks) + "\n", encoding="utf-8")
    if state is not None:
        torch.save(state, staging / STATE)
    checkpoint_id = file_hash(weights_file(staging))
    run.meta["checkpoints"] = [*(k for k in saved_checkpoints(run.meta) if k != checkpoint_id), checkpoint_id]
    run.meta["checkpoint_id"] = checkpoint_id
    run.meta["separator"] = run.separator
    (staging / META).write_text(json.dumps(run.meta, indent=2) + "\n", encoding="utf-8")  # last: staging complete
    _keep_old_checkpoint(folder, max_checkpoints)
    if state is None:
        (folder / STATE).unlink(missing_ok=True)
    finish_save(folder)
    return run.meta["checkpoint_id"]


def saved_checkpoints(meta: dict) -> list[str]:
    """The ids of the checkpoints this run folder saved since it was created, oldest first (proverbot.json's
    "checkpoints", so all with its tokenizer: the log's batches name the one that sampled them); a run saved before
    this list was kept knows its last one only."""
    known = meta.get("checkpoints")
    if isinstance(known, list) and all(isinstance(k, str) for k in known):
        return known
    return [str(meta["checkpoint_id"])] if meta.get("checkpoint_id") else []


def finish_save(folder: Path) -> None:
    """Move a staged checkpoint into place, proverbot.json last. A save cut short while writing the staging folder
    (no proverbot.json there yet) is dropped, the previous checkpoint stands; one cut short while moving (killed)
    is completed: the trainer calls this before resuming."""
    staging = folder / STAGING
    if not (staging / META).is_file():
        shutil.rmtree(staging, ignore_errors=True)
        return
    for path in sorted(staging.iterdir(), key=lambda p: p.name == META):
        os.replace(path, folder / path.name)
    staging.rmdir()


def copy_checkpoint(folder: Path, dest: Path) -> None:
    """Copy a run's checkpoint (the files of its folder, not its subfolders) into dest, emptied first."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    for path in folder.iterdir():
        if path.is_file():
            shutil.copy2(path, dest / path.name)


def _keep_old_checkpoint(folder: Path, max_checkpoints: int) -> None:
    """gpt-2-simple's max_checkpoints: keep the previous ones as step-<n>/ folders, oldest pruned."""
    if max_checkpoints <= 1 or not (folder / META).exists():
        return
    step = json.loads((folder / META).read_text()).get("step", 0)
    copy_checkpoint(folder, folder / f"step-{step:07d}")
    kept = sorted(folder.glob("step-*"))
    for stale in kept[: max(0, len(kept) - (max_checkpoints - 1))]:
        shutil.rmtree(stale)


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def load_run(folder: str | Path, device: str | torch.device = "cpu", dtype: str = "float32",
             merge_adapter: bool = True) -> Run:
    """A run folder's model on `device`. `dtype` (model.speed.SAMPLE_DTYPES; "auto": the fastest format that
    keeps quality there) is for sampling: a run to train or save must be loaded as float32. A LoRA run's base
    and adapter are merged into one GPT-2, or kept apart to train the adapter on (merge_adapter=False, float32).
    A damaged file of the run is a ModelError naming it."""
    folder = Path(folder)
    if not is_run(folder):
        raise ModelError(f"{folder} is not a proverbot run folder (no {META} or {WEIGHTS}).")
    device = torch.device(device)
    dtype = sample_dtype(dtype, device)
    for path in sorted(folder.glob("*.json")):  # config, generation config, tokenizer: a damaged one names itself
        read_json(path)
    meta, separator = read_meta(folder)
    with loading(folder / "tokenizer.json"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    with loading(folder / "config.json"):
        config = GPT2Config.from_pretrained(folder)
    weights_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    if (folder / ADAPTER).is_file():
        from model.lora import load_adapter

        model = load_adapter(folder, meta, config, merge_adapter).to(weights_dtype)
    else:
        with loading(folder / WEIGHTS):
            model = load_weights(folder, config, weights_dtype)
    blocks = read_blocks(folder, separator)
    model = fuse_gelu(model.to(device).eval())
    if dtype == "int8":
        model = quantize_int8(model)
    log.info("loaded run %s (checkpoint %s) on %s in %s", folder.name, meta.get("checkpoint_id"), device, dtype)
    return Run(folder=folder, model=model, tokenizer=tokenizer, separator=separator, blocks=blocks, meta=meta,
               dtype=dtype)


def export_merged(folder: Path, output: Path) -> str:
    """A LoRA run's base and adapter merged into `output`: a plain Hugging Face GPT-2 folder (no LoRA weights) that
    transformers, vLLM and the other servers load as it is, and a proverbot run too. It is written into a folder
    beside `output` and renamed into place, so it is never half written. Returns its checkpoint id.

    export_merged(Path("checkpoints/mybot"), Path("merged/mybot"))    # then: vllm serve merged/mybot
    """
    if not (folder / ADAPTER).is_file():
        raise ModelError(f"Run {folder.name!r} has no LoRA adapter, so there is nothing to merge: it is a plain "
                         f"Hugging Face folder already (load or copy {folder} as it is).")
    check_export_output(output)
    run = load_run(folder)
    meta = {key: run.meta[key] for key in ("base", "corpus", "step") if key in run.meta}
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        checkpoint_id = save_run(Run(partial, run.model, run.tokenizer, run.separator, run.blocks,
                                     {**meta, "merged_from": str(folder.resolve())}))
        os.rename(partial, output)  # onto an empty folder too
    except OSError as err:
        raise ModelError(f"Cannot write {output} ({err.strerror or err}).") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return checkpoint_id


def check_export_output(output: Path) -> None:
    """A merged run goes into a new or empty folder (its missing parents are made); anything else is one line, said
    before any work."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ModelError(f"{output} already exists and is not an empty folder: name a new folder for the merged run.")
    existing = next(parent for parent in output.parents if parent.exists())
    if not existing.is_dir():
        raise ModelError(f"Cannot write {output}: {existing} is a file, not a folder.")


def load_weights(folder: Path, config: GPT2Config, dtype: torch.dtype) -> GPT2LMHeadModel:
    """The model in model.safetensors (with generation_config.json); a weight missing from the file or of
    another shape than `config` says is an error, not a silently random weight."""
    model, info = GPT2LMHeadModel.from_pretrained(folder, config=config, dtype=dtype, output_loading_info=True,
                                                  ignore_mismatched_sizes=True)
    wrong = sorted(info["missing_keys"]) + sorted(name for name, *_ in info["mismatched_keys"])
    if wrong:
        raise ValueError(f"{len(wrong)} of its weights missing or not shaped as config.json says: "
                         f"{', '.join(wrong[:2])}")
    return model


def load_state(folder: Path) -> dict | None:
    """The training state saved with the checkpoint (optimizer, step, random state), None when there is none."""
    path = folder / STATE
    if not path.exists():
        return None
    with loading(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a training state")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        return state
