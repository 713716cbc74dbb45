"""Candidates: what every sampler shares, in-process (model.sample.Sampler) or remote (model.remote.RemoteSampler).

    sampler.check(SampleRequest(prefix="A fool", count=5))   # SamplingError naming a bad parameter
    batch = sampler.candidates(SampleRequest(count=5))       # a CandidateBatch: usable, rejected (with why)

`BaseSampler.generate` is gpt-2-simple's generate (raw texts); `BaseSampler.candidates` keeps sampling until it has
`count` texts that pass the filters (the run's, and the request's blocked_words: the log's blocklist, which so
applies at once in the worker and with a remote sampler alike). A sampler only says how raw texts are drawn
(`_sample_rows`). This module imports no torch: a bot with a remote sampler loads none.
"""

import logging
import math
import time
from dataclasses import dataclass, field

from model.errors import SamplingError
from model.filters import CandidateFilter, Verdict, blocked_pattern, normalise, summarise

log = logging.getLogger(__name__)


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
    run: str | None = None          # the run to sample from, by name (model.pool.Pool); None: the bot's default
    blocked_words: tuple[str, ...] = ()   # dropped with the filter's own: the log's blocklist, read per request

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
        blocked = blocked_pattern(frozenset(request.blocked_words))
        seen: set[str] = set()
        while len(batch.usable) < request.count and batch.samples < budget:
            needed = request.count - len(batch.usable)
            n = min(budget - batch.samples, needed + math.ceil(needed / 4))
            for sample in self._sample_rows(request, n, logits_processor):
                verdict = self.filter.check(sample.text, seen, blocked)
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
