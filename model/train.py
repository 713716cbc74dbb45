"""Training: a nanoGPT-style loop with gpt-2-simple's finetune parameters (names and defaults).

`base="tiny"` trains a small GPT-2 and its own tokenizer from scratch on the corpus (the embedded
default); any other base fine-tunes pretrained weights (see model/base.py). A validation split is held
out; with `patience` the run stops when validation loss stops improving and keeps its best weights.
Checkpoints are written every `save_every` steps, at the end and on Ctrl-C or SIGTERM (`docker stop`: see
model/signals.py); `restore_from="latest"` resumes step count, optimizer and random state exactly.
"""

import contextlib
import gc
import logging
import math
import random
import signal
import time
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from model import distributed, lora
from model.base import is_device, load_base, pick_device, set_dropout
from model.corpus import MAX_CORPUS_BYTES, SEPARATOR, read_corpus
from model.errors import ModelError
from model.metrics import METRICS, MetricsLog, improves
from model.candidates import SampleRequest
from model.run import STATE, Run, finish_save, load_run, load_state, save_run
from model.runinfo import is_run, loading
from model.sample import Sampler
from model.schedule import SCHEDULES, continue_schedule, lr_scheduler
from model.signals import StopSignals
from model.speed import TRAIN_DTYPES, fuse_gelu, train_autocast
from model.tokenizer import encode_blocks, separator_ids, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every option is checked when the config is made (check_config): a bad one is a ModelError."""

    corpus: str | Path = "data/proverbs_clean.txt"
    base: str = "tiny"
    # gpt-2-simple's finetune parameters and defaults (steps=-1: until Ctrl-C, epochs or patience)
    steps: int = -1
    batch_size: int = 1
    learning_rate: float = 1e-4
    accumulate_gradients: int = 5
    sample_every: int = 100
    sample_length: int = 1023
    sample_num: int = 1
    save_every: int = 1000
    print_every: int = 1
    max_checkpoints: int = 1
    restore_from: str = "latest"
    run_name: str = "run1"
    checkpoint_dir: str | Path = "checkpoints"
    only_train_transformer_layers: bool = False
    optimizer: str = "adam"
    overwrite: bool = False
    val_every: int = 0
    val_batch_count: int = 40
    # beyond gpt-2-simple
    epochs: float | None = None
    patience: int = 0
    val_fraction: float = 0.1
    block_size: int | None = None
    weight_decay: float = 0.0
    dropout: float | None = None
    separator: str = SEPARATOR
    csv_column: str | None = None
    max_corpus_mb: float = MAX_CORPUS_BYTES / 2**20  # the largest corpus read (the setting max_corpus_mb)
    seed: int = 1234
    device: str = "auto"
    dtype: str = "auto"  # autocast: auto (bfloat16 where it is native: GPUs, AVX512-BF16/AMX CPUs), float32, bfloat16
    eval_samples: int = 100
    # memory and learning rate (model/schedule.py)
    gradient_checkpointing: bool = False  # gpt-2-simple's use_memory_saving_gradients: recompute in the backward pass
    lr_schedule: str = "constant"  # constant, linear or cosine (the last two decay to 0 at the last step)
    warmup_steps: int = 0  # the learning rate rises linearly over these first steps
    # LoRA (model/lora.py): the base frozen, low-rank adapters trained beside it; the other three need lora
    lora: bool = False
    lora_rank: int | None = None  # None: 8
    lora_alpha: float | None = None  # None: twice the rank
    lora_dropout: float | None = None  # None: 0.05
    # architecture of a from-scratch model (base "tiny")
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_ctx: int = 128
    vocab_size: int = 2048

    def __post_init__(self):
        check_config(self)


# The embedded default: a small GPT-2 that trains on 2 CPU cores in minutes without memorising.
TINY_PRESET = {
    "steps": 350, "batch_size": 16, "accumulate_gradients": 1, "learning_rate": 1e-3, "weight_decay": 0.1,
    "dropout": 0.2, "sample_every": 100, "sample_length": 64, "save_every": 100, "print_every": 10, "val_every": 25,
    "val_batch_count": 8,
    "patience": 4,
}


def make_config(base: str = "tiny", **options) -> TrainConfig:
    """gpt-2-simple's defaults, the tiny preset over them for base 'tiny', the caller's options over all."""
    values = dict(TINY_PRESET) if base == "tiny" else {}
    values.update({k: v for k, v in options.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ModelError(f"Unknown training option(s): {', '.join(sorted(unknown))}.")
    return TrainConfig(base=base, **values)


AT_LEAST_1 = ("batch_size", "accumulate_gradients", "sample_every", "sample_length", "sample_num", "save_every",
              "print_every", "max_checkpoints", "val_batch_count", "n_layer", "n_embd", "n_head", "n_ctx", "vocab_size")
AT_LEAST_0 = ("val_every", "patience", "eval_samples", "warmup_steps")  # 0: off
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def check_config(cfg: TrainConfig) -> None:
    """All bad options in one ModelError, whether they come from the command line, a settings file or a caller:
    none may start a run (steps=0 used to train without end)."""
    hints = typing.get_type_hints(TrainConfig)
    problems = [problem for f in fields(cfg) if (problem := _type_problem(f.name, getattr(cfg, f.name), hints[f.name]))]
    if not problems:  # ranges are compared on values of the right type only
        problems = _range_problems(cfg) + _lora_problems(cfg)
    if problems:
        raise ModelError("Bad training options: " + "; ".join(problems) + ".")


def _type_problem(name: str, value, annotation) -> str | None:
    allowed = typing.get_args(annotation) or (annotation,)  # `float | None` -> (float, NoneType)
    if float in allowed:
        allowed += (int,)
    if isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool)):
        return None
    return f"{name} must be {TYPE_NAMES[allowed[0]]} (got {value!r})"


def _range_problems(cfg: TrainConfig) -> list[str]:
    value = {name: getattr(cfg, name) for name in AT_LEAST_1 + AT_LEAST_0}
    problems = [f"{name} must be at least 1 (got {value[name]})" for name in AT_LEAST_1 if value[name] < 1]
    problems += [f"{name} must be 0 (off) or more (got {value[name]})" for name in AT_LEAST_0 if value[name] < 0]
    checks = [
        (cfg.steps == -1 or cfg.steps >= 1,
         f"steps must be at least 1, or -1 (until Ctrl-C, epochs or patience) (got {cfg.steps})"),
        (cfg.epochs is None or 0 < cfg.epochs < math.inf, f"epochs must be a number above 0 (got {cfg.epochs})"),
        (0 < cfg.learning_rate < 1, f"learning_rate must be between 0 and 1 (got {cfg.learning_rate})"),
        (0 <= cfg.weight_decay <= 1, f"weight_decay must be between 0 and 1 (got {cfg.weight_decay})"),
        (cfg.dropout is None or 0 <= cfg.dropout < 1, f"dropout must be at least 0 and below 1 (got {cfg.dropout})"),
        (0 <= cfg.val_fraction < 0.5, f"val_fraction must be in [0, 0.5) (got {cfg.val_fraction})"),
        (cfg.block_size is None or cfg.block_size >= 8, f"block_size must be at least 8 (got {cfg.block_size})"),
        (cfg.n_embd % max(cfg.n_head, 1) == 0,
         f"n_embd must be a multiple of n_head (got {cfg.n_embd} and {cfg.n_head})"),
        (0 < cfg.max_corpus_mb < math.inf, f"max_corpus_mb must be a number above 0 (got {cfg.max_corpus_mb})"),
        (abs(cfg.seed) < 2**63, f"seed must fit in 64 bits (got {cfg.seed})"),
        (cfg.restore_from in ("latest", "fresh"),
         f"restore_from must be 'latest' or 'fresh' (got {cfg.restore_from!r})"),
        (cfg.optimizer in ("adam", "sgd"), f"optimizer must be 'adam' or 'sgd' (got {cfg.optimizer!r})"),
        (cfg.lr_schedule in SCHEDULES, f"lr_schedule must be one of {', '.join(SCHEDULES)} (got {cfg.lr_schedule!r})"),
        (cfg.lr_schedule not in ("linear", "cosine") or cfg.steps > 0 or cfg.epochs is not None,
         f"lr_schedule {cfg.lr_schedule} decays to 0 at the last step, so it needs steps or epochs (got steps -1)"),
        (cfg.steps < 1 or cfg.epochs is not None or cfg.warmup_steps < cfg.steps,
         f"warmup_steps must be below steps (got {cfg.warmup_steps} and {cfg.steps})"),
        (cfg.dtype in TRAIN_DTYPES, f"dtype must be one of {', '.join(TRAIN_DTYPES)} (got {cfg.dtype!r})"),
        (is_device(cfg.device),
         f"device must be auto, cpu, cuda, cuda:N or mps (got {cfg.device!r})"),
        (bool(cfg.run_name) and "/" not in cfg.run_name and not cfg.run_name.startswith("."),
         f"run_name must be a plain folder name (got {cfg.run_name!r})"),
    ]
    return problems + [message for ok, message in checks if not ok]


def _lora_problems(cfg: TrainConfig) -> list[str]:
    """LoRA's options: only with lora, in range, on a pretrained base (the layer width is checked by lora.wrap)."""
    given = [name for name in ("lora_rank", "lora_alpha", "lora_dropout") if getattr(cfg, name) is not None]
    if not cfg.lora:
        return [f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} lora (--lora)"] if given else []
    checks = [
        (cfg.base != "tiny", "lora fine-tunes a pretrained base (--base gpt2, a folder or a run): base tiny trains "
         "from scratch"),
        (not cfg.only_train_transformer_layers,
         "lora trains its adapters only: leave out only_train_transformer_layers"),
        (cfg.lora_rank is None or cfg.lora_rank >= 1, f"lora_rank must be at least 1 (got {cfg.lora_rank})"),
        (cfg.lora_alpha is None or 0 < cfg.lora_alpha < math.inf,
         f"lora_alpha must be a number above 0 (got {cfg.lora_alpha})"),
        (cfg.lora_dropout is None or 0 <= cfg.lora_dropout < 1,
         f"lora_dropout must be at least 0 and below 1 (got {cfg.lora_dropout})"),
    ]
    return [message for ok, message in checks if not ok]


@dataclass
class TrainResult:
    folder: Path
    step: int
    train_loss: float
    val_loss: float | None
    tokens_per_s: float
    stopped: str
    usable_rate: float | None = None
    copy_rate: float | None = None
    processes: int = 1  # under torchrun: the job's processes (tokens_per_s is the whole job's)
    batch_size: int = 1  # the global batch, split across the processes


def hold_out(blocks: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out a random `fraction` of the blocks for validation (none if the corpus is tiny)."""
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    n_val = int(len(blocks) * fraction) if len(blocks) >= 10 else 0
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [blocks[i] for i in train], [blocks[i] for i in val]


def split_blocks(run: Run) -> tuple[list[str], list[str]]:
    """The run's training and held-out blocks, split as its training split them (proverbot.json's "validation"; a
    run saved before it was recorded, or imported: TrainConfig's defaults)."""
    split = run.meta.get("validation")
    fraction, seed = TrainConfig.val_fraction, TrainConfig.seed
    if isinstance(split, dict) and isinstance(split.get("fraction"), float) and isinstance(split.get("seed"), int):
        fraction, seed = split["fraction"], split["seed"]
    return hold_out(run.blocks, fraction, seed)


def new_tiny_model(cfg: TrainConfig, blocks: list[str]):
    tokenizer = train_tokenizer(blocks, cfg.vocab_size, cfg.separator)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout or 0.0, embd_pdrop=cfg.dropout or 0.0,
        attn_pdrop=cfg.dropout or 0.0, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config), tokenizer


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True, world: distributed.World = distributed.World()):
        """`world`: this process's place under torchrun (model.distributed), its process group already started."""
        check_config(cfg)
        distributed.check_batch(world, cfg.batch_size)
        self.cfg = cfg
        self.world = world
        self.progress = progress and world.is_main
        self.device = distributed.rank_device(world, pick_device(cfg.device))
        self.folder = Path(cfg.checkpoint_dir) / cfg.run_name
        corpus = read_corpus(cfg.corpus, cfg.separator, cfg.csv_column, max_bytes=int(cfg.max_corpus_mb * 2**20))
        self.blocks = corpus.blocks
        self.train_blocks, self.val_blocks = hold_out(corpus.blocks, cfg.val_fraction, cfg.seed)
        torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights and dropout
        self.state = self._load_model()
        self.meta["validation"] = {"fraction": float(cfg.val_fraction), "seed": cfg.seed}  # for split_blocks
        fuse_gelu(self.model).to(self.device)
        if cfg.gradient_checkpointing:  # each block recomputed in the backward pass (non-reentrant: same dropout)
            self.model.activation_checkpointing_enable()
        self.train_data = self._tokens(self.train_blocks)
        self.val_data = self._tokens(self.val_blocks) if self.val_blocks else None
        self.block_size = min(cfg.block_size or self.model.config.n_positions, self.model.config.n_positions)
        if len(self.train_data) <= self.block_size:
            self.block_size = len(self.train_data) - 1
        if self.block_size < 8:
            raise ModelError(f"{cfg.corpus}: the corpus is too small to train on ({len(self.train_data)} tokens).")
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.step = 0
        self.best_val = math.inf
        self.bad_evals = 0
        self.best_weights = None
        self.batch_rng = torch.Generator().manual_seed(cfg.seed)
        self.saved_step = None  # the step of the checkpoint in the run folder
        if self.state:
            self._restore(self.state)
            self.saved_step = self.step
        self._join_processes()
        self.signals = StopSignals()  # Ctrl-C and SIGTERM, while train() runs
        self.amp_dtype = train_autocast(cfg.dtype, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    # -- setup -------------------------------------------------------------------------------------
    def _tokens(self, blocks: list[str]) -> torch.Tensor:
        """The blocks as one packed stream of token ids, a LongTensor (model.tokenizer.encode_blocks)."""
        return torch.tensor(encode_blocks(self.tokenizer, blocks, self.cfg.separator), dtype=torch.long)

    def _load_model(self) -> dict | None:
        cfg = self.cfg
        if is_run(self.folder) and cfg.restore_from == "latest" and not cfg.overwrite:
            if self.world.is_main:
                finish_save(self.folder)  # a save killed while moving its files into place
            distributed.barrier(self.world)
            run = load_run(self.folder, merge_adapter=False)  # a LoRA run: its base, and its adapter to train on
            self.model, self.tokenizer, self.meta = run.model, run.tokenizer, run.meta
            self._check_lora_resume()
            if run.separator != cfg.separator:
                raise ModelError(f"Run {cfg.run_name!r} was trained with separator {run.separator!r}, not "
                                 f"{cfg.separator!r}.")
            log.info("resuming run %s from step %s", cfg.run_name, self.meta.get("step"))
            return load_state(self.folder)
        if is_run(self.folder) and not cfg.overwrite:
            raise ModelError(
                f"Run {cfg.run_name!r} already exists in {cfg.checkpoint_dir}/: pass --restore-from latest to "
                "continue it, --overwrite to replace it, or another --run-name."
            )
        if cfg.base == "tiny":
            self.model, self.tokenizer = new_tiny_model(cfg, self.train_blocks)
        else:
            self.model, self.tokenizer = load_base(cfg.base)
            set_dropout(self.model, cfg.dropout or 0.0)  # gpt-2-simple fine-tunes without dropout
        self.meta = {"base": cfg.base, "corpus": str(cfg.corpus), "step": 0}
        if cfg.lora:
            self.model = lora.wrap(self.model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
            self.meta.update(lora.base_meta(cfg.base))
        return None

    def _check_lora_resume(self) -> None:
        """A LoRA run resumes with its own adapter, --lora or not; LoRA options that differ from it are refused."""
        cfg = self.cfg
        if lora.adapter_settings(self.model) is None:
            if cfg.lora:
                raise ModelError(f"Run {cfg.run_name!r} is a full fine-tune, not a LoRA run: leave out --lora to "
                                 "continue it, or pass --overwrite or another --run-name.")
            return
        problems = lora.mismatches(self.model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout)
        if cfg.only_train_transformer_layers:
            problems.append("only_train_transformer_layers (a LoRA run trains its adapter only)")
        if problems:
            raise ModelError(f"Run {cfg.run_name!r} is a LoRA run that resumes with its own adapter: leave out "
                             f"{'; '.join(problems)}, or pass --overwrite or another --run-name.")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        named = list(self.model.named_parameters())
        if self.cfg.only_train_transformer_layers:
            for name, param in named:
                param.requires_grad = ".h." in f".{name}"
        named = [(n, p) for n, p in named if p.requires_grad]  # with LoRA, its adapters only
        decay = [p for n, p in named if p.dim() >= 2]
        no_decay = [p for n, p in named if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.learning_rate)
        # fused: one kernel for all parameters instead of a dozen passes over each (CPU and CUDA, torch >= 2.4)
        return torch.optim.AdamW(groups, lr=self.cfg.learning_rate, betas=(0.9, 0.99), fused=True)

    def _optimizer_kind(self) -> str:
        return f"{self.cfg.optimizer}, only_train_transformer_layers={self.cfg.only_train_transformer_layers}"

    def _restore(self, state: dict) -> None:
        with loading(self.folder / STATE):
            if state.get("optimizer_kind") == self._optimizer_kind():
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                log.warning("optimizer settings changed since the checkpoint (%s, now %s): fresh optimizer state",
                            state.get("optimizer_kind"), self._optimizer_kind())
            self.step = int(state["step"])
            self.best_val = float(state["best_val"])
            self.bad_evals = int(state["bad_evals"])
            self.batch_rng.set_state(state["batch_rng"])
            torch.set_rng_state(state["torch_rng"])
            self._restore_schedule(state)

    def _make_scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        """The learning-rate schedule over the run's total steps (model/schedule.py)."""
        cfg, total = self.cfg, self.total_steps()
        if total is not None and cfg.warmup_steps >= total:  # steps are checked with the options; epochs only here
            raise ModelError(f"Bad training options: warmup_steps must be below the run's total steps (got "
                             f"{cfg.warmup_steps}; epochs {cfg.epochs} make {total} steps).")
        return lr_scheduler(self.optimizer, cfg.lr_schedule, cfg.warmup_steps, total)

    def _schedule_kind(self) -> str:
        cfg = self.cfg
        return (f"{cfg.lr_schedule}, learning_rate={cfg.learning_rate}, warmup_steps={cfg.warmup_steps}, "
                f"total_steps={self.total_steps()}")

    def _restore_schedule(self, state: dict) -> None:
        """The saved scheduler when neither the optimizer nor the schedule changed; else this command's schedule,
        at the resumed step (a new --learning-rate or --steps takes effect from there)."""
        if (state.get("optimizer_kind"), state.get("lr_schedule")) == (self._optimizer_kind(), self._schedule_kind()):
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            log.info("learning-rate schedule %s, continued at step %d (the checkpoint's: %s)", self._schedule_kind(),
                     self.step, state.get("lr_schedule"))
            continue_schedule(self.scheduler, self.step)

    def _join_processes(self) -> None:
        """Under torchrun: every process reads the same corpus and resumes the same step, draws different dropout
        masks, and trains through DistributedDataParallel (self.train_model); alone, self.train_model is the model."""
        distributed.same_everywhere(self.world, "number of training tokens", len(self.train_data),
                                    "every machine must read the same corpus")
        distributed.same_everywhere(self.world, "step", self.step, "every machine must see the same run folder (put "
                                    "--checkpoint-dir on a shared disk, or copy the run folder to each)")
        if self.world.rank:
            torch.manual_seed(self.cfg.seed + 1000 * self.world.rank + self.step)
        self.train_model = distributed.wrap(self.world, self.model, self.device)

    def interruptible(self):
        """A stop signal cuts the work short (model.signals); under torchrun it is only noted, and every process
        stops after the same step (agreed_stop): one cut short mid-pass would leave the others waiting."""
        return contextlib.nullcontext() if self.world.is_distributed else self.signals.interruptible()

    def _state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(), "optimizer_kind": self._optimizer_kind(), "step": self.step,
            "scheduler": self.scheduler.state_dict(), "lr_schedule": self._schedule_kind(),
            "best_val": self.best_val,
            "bad_evals": self.bad_evals, "batch_rng": self.batch_rng.get_state(), "torch_rng": torch.get_rng_state(),
        }

    # -- the loop ----------------------------------------------------------------------------------
    def total_steps(self) -> int | None:
        cfg = self.cfg
        if cfg.epochs is not None:
            per_step = cfg.batch_size * cfg.accumulate_gradients * self.block_size
            return max(1, math.ceil(cfg.epochs * len(self.train_data) / per_step))
        return cfg.steps if cfg.steps > 0 else None

    def get_batch(self, data: torch.Tensor, rng: torch.Generator,
                  split: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_size random windows; `split`: this process's slice of them under torchrun (every process draws
        the same global batch)."""
        ix = torch.randint(len(data) - self.block_size, (self.cfg.batch_size,), generator=rng)
        if split:
            ix = distributed.my_rows(self.world, ix)
        x = torch.stack([data[i : i + self.block_size] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + self.block_size] for i in ix])
        return x.to(self.device), y.to(self.device)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def loss(self, x: torch.Tensor, y: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
        with self.autocast():
            logits = (self.model if model is None else model)(input_ids=x, use_cache=False).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))

    def train_step(self) -> float:
        """One optimizer step. A stop signal may cut the forward and backward passes short, never the update."""
        self.model.train()
        total = 0.0
        with self.interruptible():
            for i in range(self.cfg.accumulate_gradients):
                with distributed.accumulating(self.train_model, last=i == self.cfg.accumulate_gradients - 1):
                    x, y = self.get_batch(self.train_data, self.batch_rng, split=True)
                    loss = self.loss(x, y, self.train_model) / self.cfg.accumulate_gradients
                    self.scaler.scale(loss).backward()
                total += loss.item()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step trained at (metrics.csv)
        self.scheduler.step()
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return distributed.mean(self.world, total)

    @torch.no_grad()
    def val_loss(self) -> float | None:
        if self.val_data is None or len(self.val_data) <= self.block_size:
            return None
        self.model.eval()
        rng = torch.Generator().manual_seed(0)
        with self.interruptible():
            losses = [self.loss(*self.get_batch(self.val_data, rng)).item() for _ in range(self.cfg.val_batch_count)]
        return sum(losses) / len(losses)

    def save(self) -> None:
        self.meta["step"] = self.step
        run = Run(self.folder, self.model, self.tokenizer, self.cfg.separator, self.blocks, self.meta)
        self.meta["checkpoint_id"] = save_run(run, self._state(), self.cfg.max_checkpoints)
        self.saved_step = self.step
        log.info("saved %s at step %d (checkpoint %s)", self.folder, self.step, self.meta["checkpoint_id"])

    def print_samples(self, bar) -> None:
        sampler = Sampler(Run(self.folder, self.model, self.tokenizer, self.cfg.separator, self.blocks))
        request = SampleRequest(nsamples=self.cfg.sample_num, batch_size=self.cfg.sample_num,
                                length=self.cfg.sample_length)
        with self.interruptible():
            for sample in sampler.generate(request):
                bar.write(f"[sample @ step {self.step}] {sample.text}")

    def check_validation(self, bar) -> bool:
        """Evaluate; remember the best weights; True when patience has run out."""
        val = self.val_loss()
        if val is None:
            return False
        self.last_val = val
        if improves(val, self.best_val):
            self.best_val, self.bad_evals = val, 0
            if self.cfg.patience:
                self.best_weights = {n: p.detach().clone() for n, p in self.model.named_parameters()
                                     if p.requires_grad}  # the weights that train: a LoRA run's adapter only
        else:
            self.bad_evals += 1
        bar.write(f"step {self.step}: validation loss {val:.3f} (best {self.best_val:.3f})")
        return bool(self.cfg.patience) and self.bad_evals >= self.cfg.patience

    def train(self) -> TrainResult:
        """Train until the steps, epochs or patience are done or Ctrl-C/SIGTERM comes; then save a checkpoint
        (`stopped`: steps, patience, interrupted or terminated)."""
        cfg = self.cfg
        total = self.total_steps()
        self.last_val = None
        bar = tqdm(total=total, initial=self.step, disable=not self.progress, unit="step", dynamic_ncols=True)
        tokens_per_step = cfg.batch_size * cfg.accumulate_gradients * self.block_size
        started, start_step, loss, stopped = time.perf_counter(), self.step, float("nan"), "steps"
        self.out_of_patience = False
        if self.world.is_distributed and self.world.is_main:
            bar.write(self.job_line())
        with self.signals, self.metrics_log() as self.metrics:
            try:
                while not self.agreed_stop() and (total is None or self.step < total):
                    loss = self.train_step()
                    bar.update(1)
                    rate = (self.step - start_step) * tokens_per_step / (time.perf_counter() - started)
                    if self.step % cfg.print_every == 0:
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
                    if not self.world.is_main:  # rank 0 alone validates, samples and saves; the others wait for it
                        continue
                    validated = bool(cfg.val_every) and self.step % cfg.val_every == 0
                    if validated and self.check_validation(bar):
                        self.out_of_patience = True
                    self.record(loss, rate, tokens_per_step, validated)
                    if self.out_of_patience:
                        continue
                    if self.step % cfg.sample_every == 0:
                        self.print_samples(bar)
                    if self.step % cfg.save_every == 0:
                        self.save()
            except KeyboardInterrupt:  # from self.signals (which says which signal): the interrupted pass is dropped
                stopped = "interrupted"
            finally:
                bar.close()
            if self.world.is_main:
                self.finish(bar)
        seconds = time.perf_counter() - started
        rate = (self.step - start_step) * tokens_per_step / seconds if seconds else 0.0
        stopped = "patience" if self.out_of_patience else stopped
        return TrainResult(self.folder, self.step, loss, self.last_val, rate, self.signals.stopped or stopped,
                           processes=self.world.size, batch_size=cfg.batch_size)

    def disconnect(self) -> None:
        """Free DDP's wrapper while the processes are still connected. Its reducer holds the process group, and
        gloo's teardown waits for worker threads that may need the GIL: if the reducer went last, with the GIL held,
        after destroy_process_group, a process hung at exit (seen here on a busy CPU)."""
        self.train_model = self.model
        gc.collect()

    def metrics_log(self):
        """metrics.csv in the run folder (model/metrics.py), written by rank 0 alone."""
        return MetricsLog(self.folder / METRICS, self.step) if self.world.is_main else contextlib.nullcontext()

    def record(self, loss: float, rate: float, tokens_per_step: int, validated: bool) -> None:
        """A row of metrics.csv at every logged step (print_every) and every validation."""
        val = self.last_val if validated else None
        if self.step % self.cfg.print_every == 0 or val is not None:
            self.metrics.write(self.step, self.step * tokens_per_step, loss, val, self.last_lr, rate)

    def agreed_stop(self) -> bool:
        """Stop before the next step? After a stop signal, or when patience ran out (rank 0's validation). Under
        torchrun the processes agree on it, so that all stop after the same step, and a signal that reached one
        of them only is known to all (rank 0 says which and saves)."""
        code = int(self.signals.received or 0) or int(self.out_of_patience)  # SIGTERM 15, SIGINT 2, patience 1
        agreed = distributed.agree(self.world, code)
        if agreed > 1 and not self.signals.received:
            self.signals.received = signal.Signals(agreed)
        return agreed > 0

    def job_line(self) -> str:
        """What a torchrun job does in one step, for all its processes together."""
        cfg, size = self.cfg, self.world.size
        return (f"{size} processes ({distributed.dist.get_backend()}): global batch {cfg.batch_size} = {size} x "
                f"{cfg.batch_size // size} windows of {self.block_size} tokens, accumulate {cfg.accumulate_gradients}"
                f": {cfg.batch_size * cfg.accumulate_gradients * self.block_size:,} tokens a step.")

    def finish(self, bar) -> None:
        """The last checkpoint: the current weights after a stop signal, the best ones when patience ran out."""
        keep_best = not self.signals.received and self.best_weights is not None and self.bad_evals
        if self.signals.received:
            bar.write(f"{self.signals.stopped.capitalize()} ({self.signals.received.name}): saving a checkpoint at "
                      f"step {self.step} (resume with --restore-from latest).")
        if keep_best:
            self.model.load_state_dict(self.best_weights, strict=False)
            bar.write(f"Keeping the weights with the best validation loss ({self.best_val:.3f}).")
        if keep_best or self.saved_step != self.step:  # after a signal during a periodic save, that save is the last
            self.save()


def quality_rates(folder: Path, samples: int, temperature: float = 0.8, device: str = "cpu",
                  prefix: str = "") -> tuple[float, float]:
    """Share of usable samples and of exact copies of a training block, sampled as the bot samples (dtype auto)."""
    sampler = Sampler(load_run(folder, device, "auto"))
    request = SampleRequest(prefix=prefix, nsamples=samples, batch_size=min(samples, 50), temperature=temperature,
                            seed=0)
    texts = [s.text for s in sampler.generate(request)]
    verdicts = sampler.filter.check_batch(texts)
    usable = sum(v.usable for v in verdicts) / len(verdicts)
    copies = sum(v.reason == "copy" for v in verdicts) / len(verdicts)
    return usable, copies


@torch.inference_mode()
def perplexity(run: Run, blocks: list[str]) -> float:
    """exp(mean negative log-likelihood per token) of each block and the separator closing it, scored as the
    model samples them: after a separator. On the held-out blocks, this compares number formats (bench/quality.py)."""
    sep = separator_ids(run.tokenizer, run.separator)
    nll, count = 0.0, 0
    for block in blocks:
        ids = torch.tensor([(sep + run.tokenizer.encode(block) + sep)[: run.model.config.n_positions]])
        logits = run.model(input_ids=ids).logits.float()
        nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    return math.exp(nll / count)


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Train in this process, or in this process's part of a torchrun job (model.distributed: rank 0 saves)."""
    world = distributed.from_env()
    distributed.check_batch(world, cfg.batch_size)  # before any process connects: every process stops alike
    with distributed.process_group(world, distributed.rank_device(world, pick_device(cfg.device))):
        trainer = Trainer(cfg, progress, world)
        log.info("training %s on %s: %d train / %d validation blocks, %s parameters, device %s",
                 cfg.run_name, cfg.corpus, len(trainer.train_blocks), len(trainer.val_blocks),
                 f"{sum(p.numel() for p in trainer.model.parameters()):,}", trainer.device)
        try:
            result = trainer.train()
        finally:
            trainer.disconnect()
    if cfg.eval_samples and result.stopped in ("steps", "patience") and world.is_main:
        result.usable_rate, result.copy_rate = quality_rates(result.folder, cfg.eval_samples,
                                                             device=str(trainer.device))
    return result
