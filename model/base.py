"""Where pretrained weights come from: a model-hub name, a Hugging Face folder, or an OpenAI /
gpt-2-simple TensorFlow folder (imported on the fly, no TensorFlow needed)."""

import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from model.errors import ModelError
from model.runinfo import ADAPTER
from model.tokenizer import gpt2_tokenizer

log = logging.getLogger(__name__)

# The four GPT-2 sizes, by their Hugging Face names and by gpt-2-simple's model_name.
HUB_MODELS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
HUB_FILES = ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json", "vocab.json", "merges.txt"]


def download(name: str) -> Path:
    """Download a GPT-2 from the model hub (progress bars by huggingface_hub), or say why not."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo = HUB_MODELS[name]
    log.info("downloading %s from the model hub", repo)
    try:
        return Path(snapshot_download(repo, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError as err:
        raise ModelError(
            f"Cannot download {name!r} ({repo}): no network connection to the model hub. "
            "Download it elsewhere and pass the local folder instead: --base PATH "
            "(a Hugging Face folder, or an OpenAI/gpt-2-simple folder such as models/124M)."
        ) from err
    except HfHubHTTPError as err:
        raise ModelError(f"Cannot download {name!r} ({repo}) from the model hub: {err}") from err


def load_base(base: str) -> tuple[GPT2LMHeadModel, object]:
    """A pretrained GPT-2 and its tokenizer from a hub name or a local folder."""
    folder = download(base) if base in HUB_MODELS else Path(base)
    if not folder.is_dir():
        names = ", ".join(["tiny", *HUB_MODELS])
        raise ModelError(f"Unknown base {base!r}: not a folder, and not one of {names}.")
    if (folder / ADAPTER).is_file():
        raise ModelError(f"{folder} is a LoRA run, not a whole model: merge it first (proverbot export "
                         f"{folder.name} --merge OUTPUT) and give OUTPUT as the base.")
    if (folder / "hparams.json").is_file():
        from model.importer import load_tf_gpt2

        return load_tf_gpt2(folder)
    if (folder / "config.json").is_file():
        return _load_hf_folder(folder)
    raise ModelError(
        f"{folder} is not a model folder: expected config.json (Hugging Face) or hparams.json "
        "(OpenAI / gpt-2-simple checkpoint)."
    )


def _load_hf_folder(folder: Path):
    try:
        model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise ModelError(f"{folder}: cannot load the model ({err}).") from err
    has_tokenizer = any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json"))
    tokenizer = AutoTokenizer.from_pretrained(folder) if has_tokenizer else gpt2_tokenizer()
    return model, tokenizer


def set_dropout(model: GPT2LMHeadModel, p: float) -> None:
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = p
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def is_device(name: str) -> bool:
    """`auto`, or a device torch knows: cpu, cuda, cuda:1, mps, ..."""
    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        return False
    return True


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU."""
    if not is_device(name):
        raise ModelError(f"Device {name!r} is not a device; use auto, cpu, cuda, cuda:N (N: a GPU's number) or mps.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"Device {name!r} asked for, but this machine has no CUDA GPU (or torch is a CPU build).")
    return torch.device(name)
