"""Training: a nanoGPT-style loop with gpt-2-simple's finetune parameters (names and defaults).

`base="tiny"` trains a small GPT-2 and its own tokenizer from scratch on the corpus (the embedded
default); any other base fine-tunes pretrained weights (see model/base.py). A validation split is held
out; with `patience` the run stops when validation loss stops improving and keeps its best weights.
Checkpoints are written every `save_every` steps, at the end and on Ctrl-C or SIGTERM (`docker stop`: see
model/signals.py); `restore_from="latest"` resumes step count, optimizer and random state exactly.
"""

import contextlib
import copy
import logging
import math
import random
import time
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from model.base import is_device, load_base, pick_device
from model.corpus import MAX_CORPUS_BYTES, SEPARATOR, read_corpus
from model.errors import ModelError
from model.candidates import SampleRequest
from model.run import STATE, Run, finish_save, load_run, load_state, save_run
from model.runinfo import is_run, loading
from model.sample import Sampler
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
AT_LEAST_0 = ("val_every", "patience", "eval_samples")  # 0: off
TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def check_config(cfg: TrainConfig) -> None:
    """All bad options in one ModelError, whether they come from the command line, a settings file or a caller:
    none may start a run (steps=0 used to train without end)."""
    hints = typing.get_type_hints(TrainConfig)
    problems = [problem for f in fields(cfg) if (problem := _type_problem(f.name, getattr(cfg, f.name), hints[f.name]))]
    if not problems:  # ranges are compared on values of the right type only
        problems = _range_problems(cfg)
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
        (cfg.dtype in TRAIN_DTYPES, f"dtype must be one of {', '.join(TRAIN_DTYPES)} (got {cfg.dtype!r})"),
        (is_device(cfg.device),
         f"device must be auto, cpu, cuda, cuda:N or mps (got {cfg.device!r})"),
        (bool(cfg.run_name) and "/" not in cfg.run_name and not cfg.run_name.startswith("."),
         f"run_name must be a plain folder name (got {cfg.run_name!r})"),
    ]
    return problems + [message for ok, message in checks if not ok]


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


def hold_out(blocks: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out a random `fraction` of the blocks for validation (none if the corpus is tiny)."""
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    n_val = int(len(blocks) * fraction) if len(blocks) >= 10 else 0
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [blocks[i] for i in train], [blocks[i] for i in val]


def new_tiny_model(cfg: TrainConfig, blocks: list[str]):
    tokenizer = train_tokenizer(blocks, cfg.vocab_size, cfg.separator)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout or 0.0, embd_pdrop=cfg.dropout or 0.0,
        attn_pdrop=cfg.dropout or 0.0, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2LMHeadModel(config), tokenizer


def set_dropout(model: GPT2LMHeadModel, p: float) -> None:
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = p
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True):
        check_config(cfg)
        self.cfg = cfg
        self.progress = progress
        self.device = pick_device(cfg.device)
        self.folder = Path(cfg.checkpoint_dir) / cfg.run_name
        corpus = read_corpus(cfg.corpus, cfg.separator, cfg.csv_column, max_bytes=int(cfg.max_corpus_mb * 2**20))
        self.blocks = corpus.blocks
        self.train_blocks, self.val_blocks = hold_out(corpus.blocks, cfg.val_fraction, cfg.seed)
        torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights and dropout
        self.state = self._load_model()
        fuse_gelu(self.model).to(self.device)
        self.train_data = self._tokens(self.train_blocks)
        self.val_data = self._tokens(self.val_blocks) if self.val_blocks else None
        self.block_size = min(cfg.block_size or self.model.config.n_positions, self.model.config.n_positions)
        if len(self.train_data) <= self.block_size:
            self.block_size = len(self.train_data) - 1
        if self.block_size < 8:
            raise ModelError(f"{cfg.corpus}: the corpus is too small to train on ({len(self.train_data)} tokens).")
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.best_val = math.inf
        self.bad_evals = 0
        self.best_weights = None
        self.batch_rng = torch.Generator().manual_seed(cfg.seed)
        self.saved_step = None  # the step of the checkpoint in the run folder
        if self.state:
            self._restore(self.state)
            self.saved_step = self.step
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
            finish_save(self.folder)  # a save killed while moving its files into place
            run = load_run(self.folder)
            self.model, self.tokenizer, self.meta = run.model, run.tokenizer, run.meta
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
        return None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        named = list(self.model.named_parameters())
        if self.cfg.only_train_transformer_layers:
            for name, param in named:
                param.requires_grad = ".h." in f".{name}"
            named = [(n, p) for n, p in named if p.requires_grad]
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

    def _state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(), "optimizer_kind": self._optimizer_kind(), "step": self.step,
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

    def get_batch(self, data: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(data) - self.block_size, (self.cfg.batch_size,), generator=rng)
        x = torch.stack([data[i : i + self.block_size] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + self.block_size] for i in ix])
        return x.to(self.device), y.to(self.device)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))

    def train_step(self) -> float:
        """One optimizer step. A stop signal may cut the forward and backward passes short, never the update."""
        self.model.train()
        total = 0.0
        with self.signals.interruptible():
            for _ in range(self.cfg.accumulate_gradients):
                loss = self.loss(*self.get_batch(self.train_data, self.batch_rng)) / self.cfg.accumulate_gradients
                self.scaler.scale(loss).backward()
                total += loss.item()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total

    @torch.no_grad()
    def val_loss(self) -> float | None:
        if self.val_data is None or len(self.val_data) <= self.block_size:
            return None
        self.model.eval()
        rng = torch.Generator().manual_seed(0)
        with self.signals.interruptible():
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
        with self.signals.interruptible():
            for sample in sampler.generate(request):
                bar.write(f"[sample @ step {self.step}] {sample.text}")

    def check_validation(self, bar) -> bool:
        """Evaluate; remember the best weights; True when patience has run out."""
        val = self.val_loss()
        if val is None:
            return False
        self.last_val = val
        if val < self.best_val - 1e-4:
            self.best_val, self.bad_evals = val, 0
            if self.cfg.patience:
                self.best_weights = copy.deepcopy(self.model.state_dict())
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
        with self.signals:
            try:
                while not self.signals.received and (total is None or self.step < total):
                    loss = self.train_step()
                    bar.update(1)
                    rate = (self.step - start_step) * tokens_per_step / (time.perf_counter() - started)
                    if self.step % cfg.print_every == 0:
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
                    if cfg.val_every and self.step % cfg.val_every == 0 and self.check_validation(bar):
                        stopped = "patience"
                        break
                    if self.step % cfg.sample_every == 0:
                        self.print_samples(bar)
                    if self.step % cfg.save_every == 0:
                        self.save()
            except KeyboardInterrupt:  # from self.signals (which says which signal): the interrupted pass is dropped
                stopped = "interrupted"
            finally:
                bar.close()
            self.finish(bar)
        seconds = time.perf_counter() - started
        rate = (self.step - start_step) * tokens_per_step / seconds if seconds else 0.0
        return TrainResult(self.folder, self.step, loss, self.last_val, rate, self.signals.stopped or stopped)

    def finish(self, bar) -> None:
        """The last checkpoint: the current weights after a stop signal, the best ones when patience ran out."""
        keep_best = not self.signals.received and self.best_weights is not None and self.bad_evals
        if self.signals.received:
            bar.write(f"{self.signals.stopped.capitalize()} ({self.signals.received.name}): saving a checkpoint at "
                      f"step {self.step} (resume with --restore-from latest).")
        if keep_best:
            self.model.load_state_dict(self.best_weights)
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
    trainer = Trainer(cfg, progress)
    log.info("training %s on %s: %d train / %d validation blocks, %s parameters, device %s",
             cfg.run_name, cfg.corpus, len(trainer.train_blocks), len(trainer.val_blocks),
             f"{sum(p.numel() for p in trainer.model.parameters()):,}", trainer.device)
    result = trainer.train()
    if cfg.eval_samples and result.stopped in ("steps", "patience"):
        result.usable_rate, result.copy_rate = quality_rates(result.folder, cfg.eval_samples,
                                                             device=str(trainer.device))
    return result
