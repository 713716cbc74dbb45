"""Tuning a run on what its community voted for: Direct Preference Optimization (Rafailov et al., 2023).

    pairs = [("thou shalt", "thou shalt not steal", "thou shalt the of"), ...]   # (prompt, chosen, rejected)
    result = tune(Path("checkpoints/default"), pairs, TuneConfig())           # a new checkpoint of the run

The run's current weights are the frozen reference. For each pair, the log-probability of the chosen and of the
rejected continuation (after the separator and the prompt, as the bot samples them, up to and including the
separator that ends them) is compared with the reference's:

    loss = -logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))
           + anchor * (-policy_chosen / tokens of the chosen continuation)

The second term (RPO, Pang et al., 2024) keeps the chosen texts themselves likely: without it DPO may lower both
likelihoods and only their gap, and measured here (bench/preference.py, a "prefers short sayings" community, 156
pairs) the run collapsed: held-out perplexity 175 -> 241,575 and no usable sample left.

The reference never changes, so its log-probabilities are computed once before the first step and no second copy
of the model is held. Dropout is off throughout (as TRL does): the reference and the policy agree at step 0.

Why the loss is written out, not TRL's DPOTrainer (measured on this project's 2-core CPU machine, trl 1.16.0): it
brings datasets, pandas, pyarrow, dill, multiprocess and xxhash, 273 MB more in .venv/ (pyarrow 170 MB, pandas
84 MB) and 19 s to import; the versions pip resolves with transformers 5.24 (datasets 5.2.0, pyarrow 26.0.1) fail
in DPOTrainer's dataset preparation (PicklingError: MonthDayNano, in datasets' fingerprinting); and it writes
Trainer output folders, not our run folders. The loss itself is the line above.

LoRA (peft, model/lora.py) or all the weights: with `lora` (TuneConfig) rank-8 adapters train on the attention and
MLP layers and are merged into the weights before saving, so a plain run folder stays plain; a LoRA run (issue 16)
always tunes its own adapter. By default (lora None) a run of LORA_FROM parameters or more (GPT-2 124M and up) gets
LoRA, a smaller one all its weights. Measured on 2 CPU cores, 3 epochs of 24 pairs on the tests' tiny run: all the
weights moved the held-out preference 8.4 nats in 3.6 CPU s, LoRA 0.6 nats in 4.8 s at the same learning rate; one
step on GPT-2 124M (4 pairs of 32 tokens): all the weights 15-18 CPU s and 3.2 GB peak, LoRA 14-15 s and 1.8 GB.

The new checkpoint replaces the run's (save_run: staged, moved into place, proverbot.json last: nothing is saved
half-way); the previous one is kept in <run>/before-votes/, a run folder of its own. proverbot.json's "votes" says
how many pairs the checkpoint learned from. The training state (optimizer, step) is carried over unchanged, so
`proverbot train --restore-from latest` resumes training on the corpus from the tuned weights.
"""

import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from model.base import pick_device
from model.errors import ModelError
from model.lora import wrap
from model.run import Run, copy_checkpoint, load_run, load_state, save_run, saved_checkpoints
from model.runinfo import read_meta
from model.tokenizer import separator_ids

log = logging.getLogger(__name__)

MIN_PAIRS = 20          # fewer pairs teach noise
LORA_FROM = 100_000_000  # parameters: LoRA from here on by default (memory); below, all the weights (learn faster)
PREVIOUS = "before-votes"


@dataclass
class TuneConfig:
    """Checked when made: a bad value is one ModelError line naming the option."""

    beta: float = 0.1               # how far from the reference the votes may pull (DPO's beta)
    anchor: float = 1.0             # weight of the chosen texts' own likelihood (per token): keeps the run fluent
    learning_rate: float = 1e-4
    epochs: int = 3                 # passes over the pairs
    batch_size: int = 8             # pairs per step
    lora: bool | None = None        # rank-8 LoRA adapters (merged before saving); None: for LORA_FROM parameters up
    seed: int = 1234
    device: str = "auto"

    def __post_init__(self):
        checks = [(0 < self.beta <= 10, f"beta must be above 0 and at most 10 (got {self.beta})"),
                  (0 <= self.anchor <= 100, f"anchor must be from 0 to 100 (got {self.anchor})"),
                  (0 < self.learning_rate < 1, f"learning_rate must be between 0 and 1 (got {self.learning_rate})"),
                  (isinstance(self.epochs, int) and 1 <= self.epochs <= 1000,
                   f"epochs must be a whole number from 1 to 1000 (got {self.epochs})"),
                  (1 <= self.batch_size <= 4096, f"batch_size must be from 1 to 4096 (got {self.batch_size})"),
                  (0 <= self.seed < 2**63, f"seed must be from 0 to 2**63 - 1 (got {self.seed})")]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ModelError("Bad tuning options: " + "; ".join(problems) + ".")


@dataclass
class TuneResult:
    folder: Path
    checkpoint_id: str
    previous_id: str
    pairs: int
    steps: int
    seconds: float
    prefers_before: float           # share of pairs whose chosen text the model finds likelier than the rejected
    prefers_after: float


def own_pairs(folder: Path, pairs: list[tuple]) -> list[tuple]:
    """The pairs (prompt, chosen, rejected, checkpoint id, ...) that this run's checkpoints sampled (the checkpoint
    id: the one the log recorded), or the ModelError line when too few are left: a run trained again from scratch
    has another tokenizer, and its votes from before teach it nothing."""
    meta, _ = read_meta(folder)
    known = set(saved_checkpoints(meta))
    own = [pair for pair in pairs if pair[3] in known]
    foreign = sorted({str(pair[3]) for pair in pairs if pair[3] not in known})
    if len(own) >= MIN_PAIRS:
        if foreign:
            log.warning("left out %d pairs sampled by checkpoints this run never saved (%s)", len(pairs) - len(own),
                        ", ".join(foreign[:3]))
        return own
    if foreign:
        raise ModelError(f"Run {folder.name!r}: {len(pairs) - len(own)} of its {len(pairs)} preference pairs were "
                         f"sampled by checkpoints it never saved ({', '.join(foreign[:3])}): it was trained again "
                         f"since, with another tokenizer, so they cannot tune it. It has {len(own)} pairs of its "
                         f"own; tuning needs at least {MIN_PAIRS}: vote on more batches.")
    raise ModelError(f"Run {folder.name!r} has {len(own)} preference pairs from the votes; tuning needs at least "
                     f"{MIN_PAIRS}: vote on {'more ' if own else ''}batches (a batch with a clear favourite gives "
                     "a pair for each candidate with fewer votes).")


def encode(run: Run, prompt: str, text: str) -> tuple[list[int], int]:
    """The ids the model saw when it sampled `text` after `prompt` (separator, prompt, continuation, separator) and
    where the continuation starts. `text` starts with the prompt unless it was sampled without it."""
    start = separator_ids(run.tokenizer, run.separator)
    context = start + (run.tokenizer.encode(prompt) if prompt else [])
    continuation = text[len(prompt):] if prompt and text.startswith(prompt) else text
    ids = context + run.tokenizer.encode(continuation) + start
    return ids[: run.model.config.n_positions], len(context)


def log_probs(model, batch: list[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """Sum of log-probabilities of each sequence's continuation tokens (one value per sequence)."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in batch], device=device)
    positions = torch.arange(width - 1, device=device)
    mask = torch.stack([(positions >= start - 1) & (positions < len(seq) - 1) for seq, start in batch]).float()
    attention = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq, _ in batch], device=device)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    token_logp = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:, None]).squeeze(2)
    return (token_logp * mask).sum(dim=1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()


def continuation_tokens(encoded: tuple[list[int], int]) -> int:
    ids, start = encoded
    return max(1, len(ids) - start)


def pair_log_probs(model, encoded: list, pad_id: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(chosen) and log p(rejected) of every encoded pair, without gradients, `size` pairs at a time."""
    chosen, rejected = [], []
    with torch.no_grad():
        for i in range(0, len(encoded), size):
            part = encoded[i:i + size]
            both = log_probs(model, [c for c, _ in part] + [r for _, r in part], pad_id)
            chosen.append(both[:len(part)])
            rejected.append(both[len(part):])
    return torch.cat(chosen), torch.cat(rejected)


def tune(folder: Path, pairs: list[tuple], cfg: TuneConfig, source: dict | None = None,
         progress: bool = True) -> TuneResult:
    """Tune the run in `folder` on (prompt, chosen, rejected, ...) pairs (further fields are ignored) and save it as
    the run's new checkpoint. `source` (what the pairs came from, e.g. {"batches": 12}) goes into proverbot.json."""
    if len(pairs) < MIN_PAIRS:
        raise ModelError(f"Tuning needs at least {MIN_PAIRS} preference pairs; got {len(pairs)}.")
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    run = load_run(folder, pick_device(cfg.device), merge_adapter=False)
    adapter = hasattr(run.model, "peft_config")  # a LoRA run tunes its own adapter
    pad_id = run.tokenizer.eos_token_id
    encoded = [(encode(run, p, c), encode(run, p, r)) for p, c, r, *_ in pairs]
    ref_chosen, ref_rejected = pair_log_probs(run.model, encoded, pad_id, cfg.batch_size)
    lora = not adapter and (cfg.lora if cfg.lora is not None else run.model.num_parameters() >= LORA_FROM)
    model = wrap(run.model) if lora else run.model
    steps, loss = optimise(model, encoded, (ref_chosen, ref_rejected), cfg, pad_id)
    if progress:
        log.info("tuned on %d pairs in %d steps: last loss %.4f", len(pairs), steps, loss)
    run.model = model.merge_and_unload() if lora else model
    chosen, rejected = pair_log_probs(run.model, encoded, pad_id, cfg.batch_size)
    previous = run.checkpoint_id
    run.meta["votes"] = {"pairs": len(pairs), **(source or {}), "tuned_from": previous,
                         "at": datetime.now(UTC).isoformat(timespec="seconds"), "method": "dpo", "beta": cfg.beta,
                         "lora": lora or adapter, "epochs": cfg.epochs}
    keep_previous(folder)
    checkpoint_id = save_run(run, load_state(folder))
    return TuneResult(folder, checkpoint_id, previous, len(pairs), steps, time.perf_counter() - started,
                      share(ref_chosen > ref_rejected), share(chosen > rejected))


def optimise(model, encoded: list, reference: tuple[torch.Tensor, torch.Tensor], cfg: TuneConfig,
             pad_id: int) -> tuple[int, float]:
    """`cfg.epochs` shuffled passes over the pairs, `cfg.batch_size` at a time; returns the steps and last loss."""
    model.eval()  # no dropout: the policy starts equal to the reference
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    order, steps, loss = list(range(len(encoded))), 0, torch.tensor(math.nan)
    rng = random.Random(cfg.seed)
    for _ in range(cfg.epochs):
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            part = order[i:i + cfg.batch_size]
            both = log_probs(model, [encoded[j][0] for j in part] + [encoded[j][1] for j in part], pad_id)
            chosen = both[:len(part)]
            loss = dpo_loss(chosen, both[len(part):], reference[0][part], reference[1][part], cfg.beta)
            tokens = torch.tensor([continuation_tokens(encoded[j][0]) for j in part], device=chosen.device)
            loss = loss + cfg.anchor * (-chosen / tokens).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            steps += 1
    return steps, loss.item()


def share(flags: torch.Tensor) -> float:
    return flags.float().mean().item() if len(flags) else math.nan


def keep_previous(folder: Path) -> None:
    """Copy the run's current checkpoint (its files) to <run>/before-votes/, replacing an older copy."""
    staging = folder / f".{PREVIOUS}"
    copy_checkpoint(folder, staging)
    shutil.rmtree(folder / PREVIOUS, ignore_errors=True)
    staging.rename(folder / PREVIOUS)
