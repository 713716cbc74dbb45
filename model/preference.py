"""Tuning a run on what its community voted for: Direct Preference Optimization (Rafailov et al., 2023).

    pairs = [("thou shalt", "thou shalt not steal", "thou shalt the of"), ...]   # (prompt, chosen, rejected)
    result = tune(Path("checkpoints/default"), pairs, TuneConfig())           # a new checkpoint of the run

The run's current weights are the frozen reference. For each pair, the log-probability of the chosen and of the
rejected continuation (after the separator and the prompt, as the bot samples them, up to and including the
separator that ends them) is compared with the reference's; each step also reads as many blocks of the run's own
training corpus:

    loss = -logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))
           + corpus * (-policy_block / tokens of the block)

The second term (replaying the corpus, as InstructGPT's "PPO-ptx" mixes pretraining gradients in) keeps what the run
learned from its corpus: DPO alone only widens the gap between chosen and rejected, and may lower both. Measured
here (bench/preference.py): on the tests' tiny run, DPO alone at 1e-3 took held-out perplexity 175 -> 241,575 and
left no usable sample. A term keeping the chosen texts themselves likely (RPO, Pang et al., 2024; here first) stops
that but copies the community's favourites: on the embedded default, a "prefers short sayings" community at 3e-5,
with the corpus term too, got 30 of 200 samples repeating one favourite ("for the lord"), usable 99% -> 85%;
without it, usable 98%, the taste's share 8% -> 43% and held-out perplexity +4%.

A budget bounds the cost: every `check_every` steps the held-out perplexity (the run's validation blocks) is
measured; above `max_perplexity_rise` over the run's perplexity before any votes (kept in proverbot.json, so
repeated tunings do not add up past it), the weights go back to the last check within it and the tuning stops.

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
LoRA, a smaller one all its weights. Measured on 2 CPU cores, 3 epochs of 24 pairs on the tests' tiny run at 1e-3:
all the weights moved the held-out preference 7.4 nats in 2.6 CPU s, LoRA 0.55 nats in 3.1 s (3.6 at 1e-2); one
step on GPT-2 124M (4 pairs of 32 tokens): all the weights 15-18 CPU s and 3.2 GB peak, LoRA 14-15 s and 1.8 GB.

The new checkpoint replaces the run's (save_run: staged, moved into place, proverbot.json last: nothing is saved
half-way); the previous one is kept in <run>/before-votes/, a run folder of its own. proverbot.json's "votes" says
how many pairs the checkpoint learned from, and its held-out perplexity. The tuning's steps count as the run's:
metrics.csv gets a row for each (loss; val_loss, log of the held-out perplexity, at each check), and the training
state's step moves past them, so `proverbot train --restore-from latest` resumes training on the corpus from the
tuned weights, its rows after the tuning's.
"""

import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.base import pick_device
from model.errors import ModelError
from model.lora import wrap
from model.metrics import METRICS, MetricsLog
from model.run import Run, copy_checkpoint, load_run, load_state, save_run, saved_checkpoints
from model.runinfo import read_meta
from model.tokenizer import separator_ids
from model.train import perplexity, split_blocks

log = logging.getLogger(__name__)

MIN_PAIRS = 20          # fewer pairs teach noise
LORA_FROM = 100_000_000  # parameters: LoRA from here on by default (memory); below, all the weights (learn faster)
PREVIOUS = "before-votes"


@dataclass
class TuneConfig:
    """Checked when made: a bad value is one ModelError line naming the option."""

    beta: float = 0.1               # how far from the reference the votes may pull (DPO's beta)
    corpus: float = 1.0             # weight of the corpus's own likelihood (per token, its training blocks)
    max_perplexity_rise: float = 0.1  # held-out perplexity may rise this much over the run's before any votes
    check_every: int = 10           # steps between two held-out perplexity checks
    learning_rate: float = 3e-5     # 1e-4 spends the perplexity budget in 10 steps (short)
    epochs: int = 3                 # passes over the pairs
    batch_size: int = 8             # pairs per step
    lora: bool | None = None        # rank-8 LoRA adapters (merged before saving); None: for LORA_FROM parameters up
    seed: int = 1234
    device: str = "auto"

    def __post_init__(self):
        checks = [(0 < self.beta <= 10, f"beta must be above 0 and at most 10 (got {self.beta})"),
                  (0 <= self.corpus <= 100, f"corpus must be from 0 to 100 (got {self.corpus})"),
                  (0 < self.max_perplexity_rise <= 100,
                   f"max_perplexity_rise must be above 0 and at most 100 (got {self.max_perplexity_rise})"),
                  (isinstance(self.check_every, int) and 1 <= self.check_every <= 100_000,
                   f"check_every must be a whole number from 1 to 100000 (got {self.check_every})"),
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
    steps: int                      # the steps kept (a check over the perplexity budget drops the steps since the last)
    seconds: float
    prefers_before: float           # share of pairs whose chosen text the model finds likelier than the rejected
    prefers_after: float
    perplexity: "Perplexity"
    stopped: str                    # "epochs", or "perplexity": the budget stopped it early


@dataclass
class Perplexity:
    """Held-out perplexity on the run's validation blocks: before any votes (base), before and after this tuning."""

    base: float | None
    before: float | None
    after: float | None = None

    def limit(self, rise: float) -> float:
        return self.base * (1 + rise) if self.base else math.inf

    def describe(self) -> str:
        """One phrase for people: what the tuning cost on held-out text."""
        if self.before is None:
            return "no held-out perplexity (the corpus has under 10 blocks)"
        line = f"held-out perplexity {self.before:.1f} -> {self.after:.1f} ({self.after / self.before - 1:+.0%})"
        since = f", {self.after / self.base - 1:+.0%} since before any votes" if self.base != self.before else ""
        return line + since


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
    train_blocks, val_blocks = split_blocks(run)
    corpus = [encode(run, "", block) for block in train_blocks] if cfg.corpus else []
    ref_chosen, ref_rejected = pair_log_probs(run.model, encoded, pad_id, cfg.batch_size)
    lora = not adapter and (cfg.lora if cfg.lora is not None else run.model.num_parameters() >= LORA_FROM)
    model = wrap(run.model) if lora else run.model
    guard = Guard(replace(run, model=model), val_blocks, base_perplexity(run.meta), cfg)
    start_step = int(run.meta.get("step", 0))
    total = cfg.epochs * math.ceil(len(encoded) / cfg.batch_size)
    with MetricsLog(folder / METRICS, start_step) as metrics, tqdm(total=total, disable=not progress, unit="step",
                                                                   dynamic_ncols=True) as bar:
        steps, loss, stopped = optimise(model, encoded, (ref_chosen, ref_rejected), corpus, guard, cfg, pad_id,
                                        Rows(metrics, start_step, bar))
    if not steps:
        rise, base, first = cfg.max_perplexity_rise, guard.perplexity.base, min(cfg.check_every, total)
        raise ModelError(f"Tuning run {folder.name!r} stopped at its first check (step {first}): held-out perplexity "
                         f"rose over {guard.perplexity.limit(rise):.1f} ({rise:.0%} over {base:.1f}, the run's "
                         "before any votes). Nothing changed: try a lower --learning-rate.")
    if progress:
        log.info("tuned on %d pairs in %d steps (%s): last loss %.4f", len(pairs), steps, stopped, loss)
    run.model = model.merge_and_unload() if lora else model
    chosen, rejected = pair_log_probs(run.model, encoded, pad_id, cfg.batch_size)
    previous = run.checkpoint_id
    run.meta["step"] = start_step + steps
    run.meta["votes"] = {"pairs": len(pairs), **(source or {}), "tuned_from": previous,
                         "at": datetime.now(UTC).isoformat(timespec="seconds"), "method": "dpo", "beta": cfg.beta,
                         "lora": lora or adapter, "epochs": cfg.epochs, "steps": steps, "stopped": stopped,
                         "step": run.meta["step"], "perplexity": asdict(guard.perplexity)}
    keep_previous(folder)
    checkpoint_id = save_run(run, advanced(load_state(folder), steps))
    return TuneResult(folder, checkpoint_id, previous, len(pairs), steps, time.perf_counter() - started,
                      share(ref_chosen > ref_rejected), share(chosen > rejected), guard.perplexity, stopped)


def base_perplexity(meta: dict) -> float | None:
    """The held-out perplexity of the run before any votes, when its checkpoint is a tuned one that no training on
    the corpus followed (proverbot.json's "votes"); None: the run's current perplexity is the base."""
    votes = meta.get("votes")
    if not isinstance(votes, dict) or votes.get("step") != meta.get("step"):
        return None
    base = (votes.get("perplexity") or {}).get("base") if isinstance(votes.get("perplexity"), dict) else None
    return float(base) if isinstance(base, int | float) and math.isfinite(base) and base > 0 else None


def advanced(state: dict | None, steps: int) -> dict | None:
    """The training state with the tuning's steps counted: corpus training resumes after them (metrics.csv)."""
    if state is not None and "step" in state:
        state["step"] = int(state["step"]) + steps
    return state


class Guard:
    """Held-out perplexity every `check_every` steps: the run may not rise more than `max_perplexity_rise` over its
    perplexity before any votes. The weights of the last check within that are kept; a check over it restores them
    and stops the tuning. A run without validation blocks (a corpus under 10 blocks) is not checked."""

    def __init__(self, run: Run, blocks: list[str], base: float | None, cfg: TuneConfig):
        self.run, self.blocks, self.rise = run, blocks, cfg.max_perplexity_rise
        before = perplexity(run, blocks) if blocks else None
        self.perplexity = Perplexity(base or before, before, before)
        if before is not None and before > self.perplexity.limit(self.rise):
            raise ModelError(f"Run {run.folder.name!r}: its held-out perplexity is {before:.1f}, already "
                             f"{before / self.perplexity.base - 1:.0%} over {self.perplexity.base:.1f} before any "
                             f"votes; tuning may add at most {self.rise:.0%} (max_perplexity_rise). Nothing changed.")
        self.kept, self.kept_step, self.over = self.snapshot(), 0, False

    def trainable(self):
        return [(name, p) for name, p in self.run.model.named_parameters() if p.requires_grad]

    def snapshot(self) -> dict:
        return {name: p.detach().clone() for name, p in self.trainable()}

    def check(self, step: int) -> float | None:
        """After `step`: the held-out loss, log(perplexity) (None without validation blocks); `over` says whether it
        was over the limit (and the weights went back to the last check's)."""
        if not self.blocks:
            return None
        value = perplexity(self.run, self.blocks)
        self.over = value > self.perplexity.limit(self.rise)
        if self.over:
            with torch.no_grad():
                for name, p in self.trainable():
                    p.copy_(self.kept[name])
            log.info("step %d: held-out perplexity %.2f, over the limit %.2f: back to step %d", step, value,
                     self.perplexity.limit(self.rise), self.kept_step)
        else:
            self.kept, self.kept_step, self.perplexity.after = self.snapshot(), step, value
        return math.log(value)


class Rows:
    """metrics.csv rows of the tuning, numbered after the run's step; written when the tuning ends, only those of
    the steps kept. Each step moves the progress bar."""

    def __init__(self, metrics: MetricsLog, start_step: int, bar: tqdm):
        self.metrics, self.start_step, self.rows, self.tokens = metrics, start_step, [], metrics.tokens_before
        self.started, self.bar = time.perf_counter(), bar

    def add(self, step: int, tokens: int, loss: float, val_loss: float | None, lr: float) -> None:
        self.tokens += tokens
        rate = (self.tokens - self.metrics.tokens_before) / (time.perf_counter() - self.started)
        self.rows.append((self.start_step + step, self.tokens, loss, val_loss, lr, rate))
        self.bar.update(1)
        if val_loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", perplexity=f"{math.exp(val_loss):.1f}")

    def write(self, steps: int) -> None:
        for row in self.rows[:steps]:
            self.metrics.write(*row)


def optimise(model, encoded: list, reference: tuple[torch.Tensor, torch.Tensor], corpus: list, guard: Guard,
             cfg: TuneConfig, pad_id: int, rows: Rows) -> tuple[int, float, str]:
    """`cfg.epochs` shuffled passes over the pairs, `cfg.batch_size` at a time, each step with as many corpus blocks;
    returns the steps kept, the last loss and why it stopped ("epochs" or "perplexity")."""
    model.eval()  # no dropout: the policy starts equal to the reference
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
    order, loss = list(range(len(encoded))), math.nan
    rng = random.Random(cfg.seed)
    per_epoch = math.ceil(len(order) / cfg.batch_size)
    total = cfg.epochs * per_epoch
    for step in range(1, total + 1):
        first = (step - 1) % per_epoch * cfg.batch_size
        if first == 0:
            rng.shuffle(order)
        part = order[first:first + cfg.batch_size]
        blocks = rng.sample(corpus, min(len(corpus), cfg.batch_size))
        loss, tokens = step_loss(model, [encoded[j] for j in part], [reference[0][part], reference[1][part]],
                                 blocks, cfg, pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        val_loss = guard.check(step) if step % cfg.check_every == 0 or step == total else None
        rows.add(step, tokens, loss.item(), val_loss, cfg.learning_rate)
        if val_loss is not None and guard.over:
            rows.write(guard.kept_step)
            return guard.kept_step, loss.item(), "perplexity"
    rows.write(total)
    return total, loss.item(), "epochs"


def step_loss(model, pairs: list, reference: list, blocks: list, cfg: TuneConfig,
              pad_id: int) -> tuple[torch.Tensor, int]:
    """DPO on the pairs + the corpus blocks' negative log-likelihood per token; and the tokens it read."""
    both = log_probs(model, [c for c, _ in pairs] + [r for _, r in pairs] + blocks, pad_id)
    chosen, rejected, corpus = both[:len(pairs)], both[len(pairs):2 * len(pairs)], both[2 * len(pairs):]
    loss = dpo_loss(chosen, rejected, reference[0], reference[1], cfg.beta)
    if blocks:
        sizes = [continuation_tokens(block) for block in blocks]
        loss = loss + cfg.corpus * (-corpus / torch.tensor(sizes, device=corpus.device)).mean()
    tokens = sum(len(ids) for pair in pairs for ids, _ in pair) + sum(len(ids) for ids, _ in blocks)
    return loss, tokens


def share(flags: torch.Tensor) -> float:
    return flags.float().mean().item() if len(flags) else math.nan


def keep_previous(folder: Path) -> None:
    """Copy the run's current checkpoint (its files) to <run>/before-votes/, replacing an older copy."""
    staging = folder / f".{PREVIOUS}"
    copy_checkpoint(folder, staging)
    shutil.rmtree(folder / PREVIOUS, ignore_errors=True)
    staging.rename(folder / PREVIOUS)
