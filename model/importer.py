"""Import a TensorFlow GPT-2 checkpoint (OpenAI's release or a gpt-2-simple run) into Hugging Face GPT-2, no TF.

Two folder layouts are understood, both holding hparams.json, encoder.json, vocab.bpe and a checkpoint:

- OpenAI's `models/124M`: the checkpoint is `model.ckpt.index` + `model.ckpt.data-00000-of-00001`;
- gpt-2-simple's `checkpoint/run1`: the checkpoint is `model-<step>.*`, named by the `checkpoint` text file.

TF keeps every Conv1D weight as [1, in, out]; Hugging Face's Conv1D is [in, out], so the import is a squeeze.

    model, tokenizer = load_tf_gpt2(Path("checkpoint/run1"))
    checkpoint_id = import_run(Path("checkpoint/run1"), Path("checkpoints/mybot"), blocks)   # as a run folder
"""

import json
import re
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from model.corpus import SEPARATOR
from model.errors import ModelError
from model.run import Run, save_run
from model.runinfo import is_run
from model.tfcheckpoint import TFCheckpoint
from model.tokenizer import gpt2_tokenizer

# gpt-2-simple's defaults for keys an hparams.json leaves out (GPT-2 124M); n_vocab has none.
DEFAULT_HPARAMS = {"n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}


def load_tf_gpt2(folder: Path, progress: bool = True) -> tuple[GPT2LMHeadModel, GPT2TokenizerFast]:
    """The GPT-2 model (eval mode, float32, CPU) and tokenizer in `folder`. Writes nothing to disk."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder.")
    hparams = read_hparams(folder)
    tokenizer = load_tokenizer(folder, hparams)
    ckpt = TFCheckpoint(find_checkpoint(folder))
    model = GPT2LMHeadModel(gpt2_config(hparams))
    copy_weights(model, ckpt, hparams["n_layer"], progress)
    return model.eval(), tokenizer


def import_run(source: Path, folder: Path, blocks: list[str] = (), separator: str = SEPARATOR,
               overwrite: bool = False) -> str:
    """The TensorFlow checkpoint in `source` saved as the run folder `folder` (blocks: its training texts, so that
    copies of them are filtered out); returns the new checkpoint id. Refuses to replace a run unless overwrite."""
    if is_run(folder) and not overwrite:
        raise ModelError(f"Run {folder.name!r} already exists in {folder.parent}/: pass --overwrite or another "
                         "--run-name.")
    model, tokenizer = load_tf_gpt2(source)
    meta = {"base": "import", "source": str(source), "step": 0}
    return save_run(Run(folder, model, tokenizer, separator, list(blocks), meta))


def required_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise ModelError(f"{name} is missing in {folder}: "
                         "is this a GPT-2 model folder (like models/124M or checkpoint/run1)?")
    return path


def read_hparams(folder: Path) -> dict:
    path = required_file(folder, "hparams.json")
    try:
        hparams = {**DEFAULT_HPARAMS, **json.loads(path.read_text())}
        hparams = {key: int(hparams[key]) for key in ("n_vocab", *DEFAULT_HPARAMS)}
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path} is not a GPT-2 hparams.json "
                         f"(needs n_vocab, n_ctx, n_embd, n_head, n_layer): {err}") from None
    if hparams["n_embd"] % hparams["n_head"]:
        raise ModelError(f"{path}: n_embd ({hparams['n_embd']}) is not a multiple of n_head ({hparams['n_head']}).")
    return hparams


def find_checkpoint(folder: Path) -> Path:
    """The checkpoint prefix: the one the `checkpoint` file names, else the newest model-<step>, else model.ckpt."""
    state = folder / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(errors="replace"), re.MULTILINE)
        if match:  # the path may be absolute, from the machine that trained: only its name counts
            prefix = folder / re.split(r"[\\/]", match.group(1))[-1]
            if Path(f"{prefix}.index").is_file():
                return prefix
    steps = [int(m.group(1)) for path in folder.glob("model-*.index")
             if (m := re.fullmatch(r"model-(\d+)\.index", path.name))]
    if steps:
        return folder / f"model-{max(steps)}"
    if (folder / "model.ckpt.index").is_file():
        return folder / "model.ckpt"
    raise ModelError(f"No TensorFlow checkpoint (model.ckpt.index or model-<step>.index) in {folder}.")


def gpt2_config(hparams: dict) -> GPT2Config:
    return GPT2Config(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_embd=hparams["n_embd"],
                      n_layer=hparams["n_layer"], n_head=hparams["n_head"], activation_function="gelu_new",
                      layer_norm_epsilon=1e-5, tie_word_embeddings=True)


def tf_name(hf_name: str) -> str:
    """transformer.h.0.attn.c_attn.weight -> model/h0/attn/c_attn/w; transformer.wte.weight -> model/wte."""
    parts = hf_name.removeprefix("transformer.").split(".")
    if parts[0] in ("wte", "wpe"):
        return f"model/{parts[0]}"
    if parts[0] == "h":
        parts = [f"h{parts[1]}", *parts[2:]]
    *path, leaf = parts
    leaf = "b" if leaf == "bias" else "g" if path[-1].startswith("ln_") else "w"
    return "/".join(["model", *path, leaf])


@torch.no_grad()
def copy_weights(model: GPT2LMHeadModel, ckpt: TFCheckpoint, n_layer: int, progress: bool):
    """Fill every parameter of `model` from `ckpt`; lm_head is tied to wte, so it is not listed separately."""
    layers = {int(m.group(1)) for name in ckpt.entries if (m := re.match(r"model/h(\d+)/", name))}
    extra = [f"model/h{i}/" for i in sorted(layers) if i >= n_layer]
    if extra:
        raise ModelError(f"{ckpt.index_path} has layers {', '.join(extra)} beyond hparams.json's n_layer={n_layer}.")
    params = list(model.named_parameters())  # shared tensors are listed once: lm_head.weight is wte
    for hf_name, param in tqdm(params, desc="Importing TF GPT-2", unit="tensor", disable=not progress):
        name = tf_name(hf_name)
        if name not in ckpt.entries:
            raise ModelError(f"{ckpt.index_path} has no tensor {name} (for {hf_name}).")
        shape = ckpt.entries[name].shape
        if len(shape) == 3 and shape[0] == 1:  # Conv1D weight [1, in, out] -> [in, out]
            shape = shape[1:]
        if shape != tuple(param.shape):
            raise ModelError(f"{ckpt.index_path}: tensor {name} has shape {list(ckpt.entries[name].shape)}, "
                             f"hparams.json needs {list(param.shape)} for {hf_name}.")
        param.copy_(torch.from_numpy(ckpt.read(name).reshape(shape)))


def load_tokenizer(folder: Path, hparams: dict) -> GPT2TokenizerFast:
    """GPT-2's byte-level BPE from the folder's encoder.json + vocab.bpe."""
    for name in ("encoder.json", "vocab.bpe"):
        required_file(folder, name)
    try:
        tokenizer = gpt2_tokenizer(folder, hparams["n_ctx"])
    except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as err:
        raise ModelError(f"encoder.json or vocab.bpe in {folder} is not a GPT-2 vocabulary ({err}).") from None
    if len(tokenizer) > hparams["n_vocab"]:
        raise ModelError(f"encoder.json in {folder} has {len(tokenizer)} tokens, "
                         f"more than hparams.json's n_vocab={hparams['n_vocab']}.")
    return tokenizer
