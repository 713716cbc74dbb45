"""LoRA through peft: fine-tune a big GPT-2 by training small low-rank matrices beside its frozen layers.

    model = wrap(base_model, rank=8)                     # GPT-2's c_attn, c_proj and c_fc get adapters; only they train
    model = load_adapter(folder, meta, config)           # a LoRA run folder's base and adapter, merged into one GPT-2

A LoRA run folder holds peft's adapter (adapter_config.json, adapter_model.safetensors) in place of
model.safetensors, beside the base's config.json and tokenizer; proverbot.json names the base (`base`: a hub name
or an absolute folder) and, when the base is a proverbot run, that run's checkpoint id (`base_checkpoint_id`), so
that an adapter is never put on weights it was not trained on. peft's own loader reads the folder too
(`AutoPeftModelForCausalLM.from_pretrained`); `proverbot export RUN --merge OUTPUT` writes the merged plain GPT-2.
"""

import warnings
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from model.base import HUB_MODELS, load_base, set_dropout
from model.errors import ModelError
from model.runinfo import ADAPTER_WEIGHTS, META, is_run, loading, read_json

TARGETS = ["c_attn", "c_proj", "c_fc"]  # GPT-2's attention and MLP layers: transformers' Conv1D (weights in x out)
RANK = 8
DROPOUT = 0.05
# peft 0.21 asks transformers 5 whether gradient checkpointing is on by the old name, which warns at every wrap
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def wrap(model: GPT2LMHeadModel, rank: int | None = None, alpha: float | None = None,
         dropout: float | None = None) -> PeftModel:
    """`model` frozen, with LoRA adapters of `rank` (8) on its attention and MLP layers, scaled by alpha / rank
    (alpha: twice the rank), with `dropout` (0.05) on their input. A rank above the layers' width is refused."""
    rank = RANK if rank is None else rank
    width = model.config.n_embd
    if rank > width:
        raise ModelError(f"Bad training options: lora_rank must be at most {width}, the width of the base's layers "
                         f"(got {rank}).")
    config = LoraConfig(r=rank, lora_alpha=2 * rank if alpha is None else alpha,
                        lora_dropout=DROPOUT if dropout is None else dropout, target_modules=TARGETS,
                        fan_in_fan_out=True, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def adapter_settings(model) -> LoraConfig | None:
    """The LoRA settings of a wrapped model (rank: .r, .lora_alpha, .lora_dropout); None for a plain GPT-2."""
    return model.peft_config["default"] if isinstance(model, PeftModel) else None


def mismatches(model: PeftModel, rank: int | None, alpha: float | None, dropout: float | None) -> list[str]:
    """The LoRA options given (not None) that differ from the adapter's own: a run resumes with its adapter."""
    own = adapter_settings(model)
    given = {"lora_rank": (rank, own.r), "lora_alpha": (alpha, own.lora_alpha),
             "lora_dropout": (dropout, own.lora_dropout)}
    return [f"{name} {value} (the adapter's: {theirs})" for name, (value, theirs) in given.items()
            if value is not None and value != theirs]


def base_meta(base: str) -> dict:
    """What proverbot.json records of a LoRA run's base: the hub name, or the folder as an absolute path (and the
    checkpoint id when it is a proverbot run)."""
    if base in HUB_MODELS:
        return {"base": base}
    folder = Path(base).resolve()
    meta = {"base": str(folder)}
    if is_run(folder):
        meta["base_checkpoint_id"] = read_json(folder / META).get("checkpoint_id", "")
    return meta


def save_adapter(model: PeftModel, folder: Path, base: str) -> None:
    """peft's adapter files, and the base's config.json and the generation config (read by the bot and the remote
    sampler, as in any run folder)."""
    adapter_settings(model).base_model_name_or_path = base  # for peft's own loader
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "README.md").unlink(missing_ok=True)  # peft's empty model card
    model.get_base_model().config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)


def load_adapter(folder: Path, meta: dict, config: GPT2Config, merge: bool = True):
    """The run's base with its adapter: merged into one GPT2LMHeadModel (to sample, to export), or a PeftModel whose
    adapter trains (merge=False). The base is checked against the one the adapter was trained on."""
    base = _load_base_of(folder, meta)
    if base.config.n_embd != config.n_embd or base.config.n_layer != config.n_layer:
        raise ModelError(f"Run {folder.name!r} is a LoRA adapter for a {config.n_layer}-layer, {config.n_embd}-wide "
                         f"GPT-2, but its base {meta['base']} is not that model.")
    set_dropout(base, config.resid_pdrop)  # as the run trained: the base's config.json in the run folder says
    with loading(folder / ADAPTER_WEIGHTS):
        model = PeftModel.from_pretrained(base, folder, is_trainable=not merge)
    return model.merge_and_unload() if merge else model


def _load_base_of(folder: Path, meta: dict) -> GPT2LMHeadModel:
    base = meta.get("base")
    if not isinstance(base, str) or not base:
        raise ModelError(f"Run {folder.name!r} has a LoRA adapter but {folder / META} names no base.")
    if base not in HUB_MODELS and not Path(base).is_dir():
        raise ModelError(f"Run {folder.name!r} is a LoRA adapter on {base}, which is not there any more: restore "
                         "that folder, or train the run again.")
    expected = meta.get("base_checkpoint_id")
    if expected and read_json(Path(base) / META).get("checkpoint_id") != expected:
        raise ModelError(f"Run {folder.name!r} is a LoRA adapter on {base} at checkpoint {expected}, but that run has "
                         "been trained further since: the adapter does not fit it any more.")
    return load_base(base)[0]
