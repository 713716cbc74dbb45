"""Sampling: batched, key-value cached, and each sample stops at the separator.

gpt-2-simple always generates `length` tokens and splits afterwards; here a sample stops as soon as it
emits the separator (or end-of-text) and a batch stops when all its samples have, so no token is wasted.
`Sampler.generate` is gpt-2-simple's generate (raw texts); `Sampler.candidates` keeps sampling until it
has `count` texts that pass the filters, and says why the others were dropped. Both are BaseSampler's, shared with
model.remote.RemoteSampler (an inference server): a sampler only says how raw texts are drawn (`_sample_rows`).

The decoding loop is our own rather than transformers' `generate`, for one reason: each token is drawn with
one uniform number per row (`draw`), where torch.multinomial (and so `generate`) draws an exponential for every
vocabulary entry: 10 ms a token for 7 rows of GPT-2's 50,257 on a CPU, a third of a 124M model's int8 step.
"""

import inspect
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, GPT2LMHeadModel, TopKLogitsWarper, TopPLogitsWarper

from model.errors import SamplingError
from model.filters import CandidateFilter, Verdict, normalise, summarise
from model.run import Run, generation_defaults
from model.tokenizer import separator_ids

log = logging.getLogger(__name__)

# transformers 5 renamed the key-value cache argument (the old name warns, and goes in 5.40)
CACHE_ARG = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token id per row of `probs` (rows x vocabulary, each summing to 1), by inverse CDF: the first id whose
    cumulative probability exceeds a uniform number. Ids of probability 0 are never drawn."""
    cdf = probs.double().cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, dtype=cdf.dtype, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)


@dataclass(frozen=True)
class SampleRequest:
    """gpt-2-simple's generate parameters, plus `count` usable candidates for the bot."""

    prefix: str = ""
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.0
    nsamples: int = 1
    batch_size: int = 1
    length: int | None = None
    seed: int | None = None
    truncate: str | None = None
    include_prefix: bool = True
    count: int = 5
    max_samples: int | None = None

    def check(self) -> None:
        """Raise SamplingError naming every parameter that is out of range (input from users is untrusted)."""
        problems = []
        if not 0 < self.temperature <= 2:
            problems.append(f"temperature must be more than 0 and at most 2.0 (got {self.temperature:g})")
        if self.top_k < 0:
            problems.append(f"top_k must be 0 (off) or more (got {self.top_k})")
        if not 0 <= self.top_p <= 1:
            problems.append(f"top_p must be between 0 (off) and 1 (got {self.top_p:g})")
        for name in ("nsamples", "batch_size", "count"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.length is not None and self.length < 1:
            problems.append(f"length must be at least 1 (got {self.length})")
        if problems:
            raise SamplingError("Bad sampling parameters: " + "; ".join(problems) + ".")


def prefix_problem(prefix: str, separator: str) -> str | None:
    """Why `prefix` cannot start a text of a run whose texts end at `separator`, or None. A sample is cut at the
    separator, so one in the prefix would end the text before it began ("a ========== b" gives "a")."""
    line = separator.strip()
    if line and line in prefix:
        return f"The prefix contains the separator line {line} that ends a text; leave it out."
    return None


def room(start: int, prefix: int, n_ctx: int, length: int | None) -> int:
    """Tokens a sample may take after a prompt of `start` framing and `prefix` tokens in a context of `n_ctx`: at most
    `length`. SamplingError when the prefix leaves no room."""
    left = n_ctx - start - prefix
    if left < 1:
        raise SamplingError(f"The prefix is {prefix} tokens long; this model's context holds {n_ctx - start - 1} at "
                            "most.")
    return left if length is None else min(length, left)


@dataclass
class Sample:
    text: str
    tokens: int


@dataclass
class Candidate:
    text: str
    tokens: int
    verdict: Verdict


@dataclass
class CandidateBatch:
    usable: list[Candidate]
    rejected: list[Candidate] = field(default_factory=list)
    samples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    run_name: str = ""
    checkpoint_id: str = ""
    device: str = ""
    generation_id: int | None = None  # set once the batch is recorded in the log

    def rejected_summary(self) -> dict[str, int]:
        return summarise([c.verdict for c in self.rejected])


class BaseSampler:
    """What every sampler shares: the parameter check, the usable-candidate filters and the refill loop. A subclass
    draws the raw texts (`_sample_rows`, `_seed`) and sets `separator`, `filter`, `run_name`, `checkpoint_id`,
    `device` and `backend` (in-process, or the server's URL: model.remote.RemoteSampler)."""

    separator: str
    filter: CandidateFilter
    run_name: str
    checkpoint_id: str
    device: str
    backend: str

    def check(self, request: SampleRequest) -> None:
        """SamplingError when a parameter is out of range or the prefix holds this run's separator."""
        request.check()
        problem = prefix_problem(request.prefix, self.separator)
        if problem:
            raise SamplingError(problem)

    def generate(self, request: SampleRequest, logits_processor=None) -> list[Sample]:
        """gpt-2-simple's generate: `nsamples` texts in batches of `batch_size` (list return)."""
        self.check(request)
        self._seed(request.seed)
        return self._sample_rows(request, request.nsamples, logits_processor)

    def candidates(self, request: SampleRequest, logits_processor=None) -> CandidateBatch:
        """Sample until `count` candidates pass the filters or `max_samples` (default 4 x count) are drawn."""
        self.check(request)
        started = time.perf_counter()
        self._seed(request.seed)
        batch = CandidateBatch(usable=[], run_name=self.run_name, checkpoint_id=self.checkpoint_id, device=self.device)
        budget = request.max_samples or 4 * request.count
        seen: set[str] = set()
        while len(batch.usable) < request.count and batch.samples < budget:
            needed = request.count - len(batch.usable)
            n = min(budget - batch.samples, needed + math.ceil(needed / 4))
            for sample in self._sample_rows(request, n, logits_processor):
                verdict = self.filter.check(sample.text, seen)
                candidate = Candidate(sample.text, sample.tokens, verdict)
                if verdict.usable and len(batch.usable) < request.count:
                    seen.add(normalise(sample.text))
                    batch.usable.append(candidate)
                elif not verdict.usable:
                    batch.rejected.append(candidate)
                batch.tokens += sample.tokens
            batch.samples += n
        batch.seconds = time.perf_counter() - started
        log.info("sampled %d texts (%d tokens) in %.2fs: %d usable, rejected %s",
                 batch.samples, batch.tokens, batch.seconds, len(batch.usable), batch.rejected_summary())
        return batch

    def _seed(self, seed: int | None) -> None:
        """Make what follows repeatable when `seed` is set."""
        raise NotImplementedError

    def _sample_rows(self, request: SampleRequest, n: int, logits_processor=None) -> list[Sample]:
        """n raw samples of `request`, each cut at the separator (and `truncate`)."""
        raise NotImplementedError


def cut(text: str, request: SampleRequest, separator: str) -> str:
    """A sample's text as the bot shows it: the prefix in front when asked, cut at the separator and `truncate`."""
    if request.prefix and request.include_prefix:
        text = request.prefix + text
    for end in (separator, request.truncate):
        if end and end in text:
            text = text[: text.index(end)]
    return text.strip()


class Sampler(BaseSampler):
    """Samples from one loaded run. Not thread-safe: the model worker owns it in one thread."""

    backend = "in-process"

    def __init__(self, run: Run, blocked_words: list[str] = (), max_length: int = 280):
        self.run = run
        self.run_name, self.checkpoint_id = run.name, run.checkpoint_id
        self.model = run.model.eval()
        self.tokenizer = run.tokenizer
        self.device = str(next(self.model.parameters()).device)
        self.separator = run.separator
        self.start_ids = separator_ids(self.tokenizer, self.separator)
        self.filter = CandidateFilter(run.blocks, blocked_words=blocked_words, max_length=max_length)
        self.n_ctx = self.model.config.n_positions
        defaults = generation_defaults(self.tokenizer, self.separator, self.n_ctx)
        self.stop_ids = torch.tensor(defaults.eos_token_id, device=self.device)  # end-of-text, a one-token separator
        self.pad_id = defaults.pad_token_id  # what a stopped row gets until its batch stops
        # a several-token separator (GPT-2's "\n==========") stops a row once its ids end with it
        tail = self.tokenizer.encode(f"\n{self.separator}") if len(self.start_ids) > 1 else []
        self.separator_tail = torch.tensor(tail, dtype=torch.long, device=self.device)

    def _seed(self, seed: int | None) -> None:
        if seed is not None:
            torch.manual_seed(seed)

    def _sample_rows(self, request: SampleRequest, n: int, logits_processor=None) -> list[Sample]:
        """n samples, in forward passes of at most batch_size rows."""
        samples = []
        while len(samples) < n:
            rows = min(max(1, request.batch_size), n - len(samples))
            samples += self._sample_batch(request, rows, logits_processor)
        return samples

    def _prompt(self, prefix: str, length: int | None) -> tuple[list[int], int]:
        prefix_ids = self.tokenizer.encode(prefix) if prefix else []
        return self.start_ids + prefix_ids, room(len(self.start_ids), len(prefix_ids), self.n_ctx, length)

    @torch.inference_mode()
    def _sample_batch(self, request: SampleRequest, n: int, logits_processor=None) -> list[Sample]:
        """n samples of one prompt, decoded together with a key-value cache until every row has stopped.
        `logits_processor`: callables (ids, scores) -> scores applied before temperature, top-k and top-p
        (transformers' LogitsProcessor interface)."""
        prompt, length = self._prompt(request.prefix, request.length)
        ids = torch.tensor([prompt] * n, device=self.device)
        processors = [*(logits_processor or ()), *self._warpers(request)]
        stopped = torch.zeros(n, dtype=torch.bool, device=self.device)
        cache, new = {CACHE_ARG: DynamicCache()}, ids
        for _ in range(length):
            scores = self.model(input_ids=new, use_cache=True, logits_to_keep=1, **cache).logits[:, -1].float()
            for process in processors:
                scores = process(ids, scores)
            new = draw(scores.softmax(dim=-1)).masked_fill_(stopped[:, None], self.pad_id)
            ids = torch.cat([ids, new], dim=1)
            stopped |= self._stops(ids)
            if stopped.all():
                break
        return [self._decode(row[len(prompt):].tolist(), request) for row in ids]

    def _warpers(self, request: SampleRequest) -> list:
        """gpt-2-simple's sampling knobs, in transformers' order: temperature, then top-k, then top-p."""
        warpers = [lambda ids, scores: scores / request.temperature]
        if request.top_k:
            warpers.append(TopKLogitsWarper(request.top_k))
        if 0 < request.top_p < 1:
            warpers.append(TopPLogitsWarper(request.top_p))
        return warpers

    def _stops(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows whose last token ends a sample: a stop token, or the last of the separator's tokens."""
        stops = torch.isin(ids[:, -1], self.stop_ids)
        tail = self.separator_tail
        if len(tail) and ids.shape[1] >= len(tail):
            stops |= (ids[:, -len(tail):] == tail).all(dim=1)
        return stops

    def _decode(self, new_ids: list[int], request: SampleRequest) -> Sample:
        """Text up to the first stop token (the prefix in front when asked), cut at the separator/truncate."""
        stop_ids = set(self.stop_ids.tolist())
        end = next((i for i, t in enumerate(new_ids) if t in stop_ids), len(new_ids))
        text = self.tokenizer.decode(new_ids[:end], skip_special_tokens=True)
        return Sample(text=cut(text, request, self.separator), tokens=min(end + 1, len(new_ids)))
