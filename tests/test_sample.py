import asyncio
import time

import pytest
import torch
from transformers import LogitsProcessor

from model.errors import SamplingError
from model.candidates import SampleRequest
from model.worker import ModelWorker


class ForceTokens(LogitsProcessor):
    """Makes row i emit plans[i] token by token (then repeats its last token); counts the steps taken."""

    def __init__(self, plans: list[list[int]], prompt_length: int = 1):
        self.plans = plans
        self.prompt_length = prompt_length
        self.steps = 0

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, -float("inf"))
        for row in range(scores.shape[0]):
            plan = self.plans[row % len(self.plans)]
            forced[row, plan[min(step, len(plan) - 1)]] = 0
        self.steps += 1
        return forced


def ids(sampler, text):
    return sampler.tokenizer.encode(text)


def test_each_sample_stops_at_the_separator_and_the_batch_when_all_have(sampler):
    sep = sampler.start_ids[0]
    short, long = ids(sampler, " wise"), ids(sampler, " a wise son maketh a glad father")
    force = ForceTokens([short + [sep], long + [sep]])
    samples = sampler.generate(SampleRequest(nsamples=2, batch_size=2, length=50), logits_processor=[force])
    assert [s.text for s in samples] == ["wise", "a wise son maketh a glad father"]
    assert [s.tokens for s in samples] == [len(short) + 1, len(long) + 1]
    assert force.steps == len(long) + 1  # not 50: the batch stopped when its last sample did


def test_end_of_text_also_stops(sampler):
    plan = ids(sampler, " the end") + [sampler.tokenizer.eos_token_id]
    force = ForceTokens([plan])
    (sample,) = sampler.generate(SampleRequest(length=30), logits_processor=[force])
    assert sample.text == "the end" and force.steps == len(plan)


def test_length_bounds_a_sample_without_separator(sampler):
    force = ForceTokens([ids(sampler, " the")])
    (sample,) = sampler.generate(SampleRequest(length=7), logits_processor=[force])
    assert sample.tokens == 7 and sample.text == " ".join(["the"] * 7)


def test_prefix_include_prefix_and_truncate(sampler):
    sep = sampler.start_ids[0]
    prompt_length = 1 + len(ids(sampler, "thou shalt"))
    force = ForceTokens([ids(sampler, " not steal. and more") + [sep]], prompt_length)
    request = SampleRequest(prefix="thou shalt", length=20)
    assert sampler.generate(request, [force])[0].text == "thou shalt not steal. and more"
    request = SampleRequest(prefix="thou shalt", include_prefix=False, truncate=".", length=20)
    assert sampler.generate(request, [force])[0].text == "not steal"


def test_prefix_steers_real_samples(sampler):
    samples = sampler.generate(SampleRequest(prefix="the fear of", nsamples=4, batch_size=4, seed=3, length=20))
    assert all(s.text.startswith("the fear of") for s in samples)


def test_same_seed_same_candidates(sampler):
    request = SampleRequest(count=3, seed=42, temperature=1.0, length=30, batch_size=8)
    first = [c.text for c in sampler.candidates(request).usable]
    assert first == [c.text for c in sampler.candidates(request).usable]
    other = SampleRequest(count=3, seed=43, temperature=1.0, length=30, batch_size=8)
    assert first != [c.text for c in sampler.candidates(other).usable]


def test_candidates_are_filtered_and_reported(sampler):
    batch = sampler.candidates(SampleRequest(count=4, seed=1, temperature=0.9, length=40, batch_size=10))
    assert len(batch.usable) == 4
    assert all(c.verdict.usable and c.text for c in batch.usable)
    assert len(batch.usable) + len(batch.rejected) <= batch.samples <= 16
    assert batch.tokens > 0 and batch.run_name == "tiny" and batch.checkpoint_id


def test_copies_are_rejected_until_the_budget_is_spent(sampler):
    block = sampler.run.blocks[0]
    sep = sampler.start_ids[0]
    copy = ids(sampler, block) + [sep]
    force = ForceTokens([copy])
    batch = sampler.candidates(SampleRequest(count=2, max_samples=6, length=60, batch_size=8), logits_processor=[force])
    assert batch.usable == [] and batch.samples == 6
    assert batch.rejected_summary() == {"copy": 6}
    assert batch.rejected[0].verdict.copy_of == 0


def test_prefix_longer_than_the_context_is_an_error(sampler):
    with pytest.raises(SamplingError, match="this model's context holds"):
        sampler.generate(SampleRequest(prefix="wisdom " * 200))


@pytest.mark.parametrize("prefix", ["a ========== b", "==========", "  ========== "])
def test_a_prefix_holding_the_separator_is_refused(sampler, prefix):
    """A sample is cut at the separator: one in the prefix would end the text before it began."""
    message = "The prefix contains the separator line ========== that ends a text; leave it out."
    for sample in (sampler.generate, sampler.candidates):
        with pytest.raises(SamplingError, match=message):
            sample(SampleRequest(prefix=prefix))


def test_equals_signs_short_of_the_separator_are_text(sampler):
    [sample] = sampler.generate(SampleRequest(prefix="a ========= b", length=5, seed=1))
    assert sample.text.startswith("a ========= b")


async def test_worker_serves_the_real_model_without_blocking_the_loop(sampler):
    lags = []

    async def heartbeat():
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    async with ModelWorker(lambda: sampler, max_queue=32) as worker:
        beat = asyncio.create_task(heartbeat())
        requests = [SampleRequest(count=1, seed=i, length=20, temperature=1.0) for i in range(20)]
        results = await asyncio.gather(*(worker.sample(r) for r in requests))
        beat.cancel()
    for request, batch in zip(requests, results):
        assert batch.usable[0].text == sampler.candidates(request).usable[0].text  # routed to its own caller
    assert len(lags) > 5 and max(lags) < 0.05


def test_bad_parameters_are_named_together(sampler):
    with pytest.raises(SamplingError) as err:
        sampler.candidates(SampleRequest(temperature=-1, count=0, batch_size=0))
    assert "temperature must be" in str(err.value) and "count must be at least 1" in str(err.value)
    assert "batch_size must be at least 1" in str(err.value)
