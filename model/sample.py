"""Sampling: batched, key-value cached, and each sample stops at the separator.

gpt-2-simple always generates `length` tokens and splits afterwards; here a sample stops as soon as it
emits the separator (or end-of-text) and a batch stops when all its samples have, so no token is wasted.
`Sampler.generate` is gpt-2-simple's generate (raw texts); `Sampler.candidates` keeps sampling until it
has `count` texts that pass the filters, and says why the others were dropped. Both are model.candidates.BaseSampler's,
shared with model.remote.RemoteSampler (an inference server): a sampler only says how raw texts are drawn
(`_sample_rows`).

The decoding loop is our own rather than transformers' `generate`, for one reason: each token is drawn with
one uniform number per row (`draw`), where torch.multinomial (and so `generate`) draws an exponential for every
vocabulary entry: 10 ms a token for 7 rows of GPT-2's 50,257 on a CPU, a third of a 124M model's int8 step.
"""

import inspect

import torch
from transformers import DynamicCache, GPT2LMHeadModel, TopKLogitsWarper, TopPLogitsWarper

from model.candidates import BaseSampler, Sample, SampleRequest, cut, room
from model.filters import CandidateFilter
from model.run import Run, generation_defaults
from model.tokenizer import separator_ids

# transformers 5 renamed the key-value cache argument (the old name warns, and goes in 5.40)
CACHE_ARG = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token id per row of `probs` (rows x vocabulary, each summing to 1), by inverse CDF: the first id whose
    cumulative probability exceeds a uniform number. Ids of probability 0 are never drawn."""
    cdf = probs.double().cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, dtype=cdf.dtype, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)


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
