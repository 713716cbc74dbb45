"""The platform-free core against real parts: the session's tiny model in a real ModelWorker, a real SQLite log."""

import asyncio
import re
import threading

import pytest

from chatbot.context import Context
from chatbot.core import (
    BadRequest,
    Core,
    Defaults,
    ModelInfo,
    NothingToPost,
)
from chatbot.posting import PostFailed
from chatbot.publishers import PublishError
from chatbot.publishers.dryrun import DryRunPublisher
from model.worker import ModelWorker
from storage import AlreadyPosted

ADA = Context("test", channel_id="c1", user_id="u1", user_name="ada")
BOB = Context("test", channel_id="c1", user_id="u2", user_name="bob")


class FailingPublisher:
    name = "failing"

    def __init__(self):
        self.fail = True

    async def publish(self, text):
        if self.fail:
            raise PublishError("rate limited until 15:00.")
        return await DryRunPublisher().publish(text)


TEST_DEFAULTS = Defaults(length=20, batch_size=8)


def make_core(db, worker, sampler, publisher=None, defaults=TEST_DEFAULTS):
    return Core(db, worker, publisher or DryRunPublisher(), ModelInfo.of(sampler), defaults)


@pytest.fixture
def core(db, worker, sampler):
    return make_core(db, worker, sampler)


async def ask_for(core, ctx=ADA, count=3):
    """A batch with at least two usable candidates (the tiny model sometimes yields fewer)."""
    for _ in range(5):
        result = await core.ask(ctx, count=count, length=20, temperature=1.0)
        if len(result.candidates) >= 2:
            return result
    pytest.skip("the tiny model gave fewer than two usable candidates five times")


async def test_ask_logs_generation_and_candidates(core, db):
    result = await core.ask(ADA, prefix="the lord", temperature=0.9, count=2, length=20)
    generation = await db.get_generation(result.generation_id)
    assert generation.status == "ok"
    assert (generation.platform, generation.channel_id, generation.user_name) == ("test", "c1", "ada")
    assert (generation.prefix, generation.temperature, generation.count, generation.length) == ("the lord", 0.9, 2, 20)
    assert generation.run_name == core.model.run_name and generation.samples == result.samples
    usable = [c for c in generation.candidates if c.usable]
    assert [(c.id, c.text) for c in usable] == [(c.id, c.text) for c in result.candidates]
    assert [c.number for c in result.candidates] == list(range(1, len(result.candidates) + 1))
    assert len(generation.candidates) - len(usable) == result.filtered_out
    assert 1 <= len(result.candidates) <= 2


@pytest.mark.parametrize("options, message", [
    ({"temperature": 5.0}, "temperature must be a number from 0.1 to 2"),
    ({"temperature": 0.05}, "temperature must be a number from 0.1 to 2"),
    ({"temperature": "warm"}, "temperature must be a number"),
    ({"count": 11}, "count must be a whole number from 1 to 10"),
    ({"count": 2.5}, "count must be a whole number"),
    ({"length": 0}, "length must be a whole number from 1 to 200"),
    ({"prefix": "x" * 201}, "201 characters long; at most 200"),
    ({"prefix": "thou\x07shalt"}, "control character (U+0007)"),
    ({"prefix": "a ========== b"}, "The prefix contains the separator line ========== that ends a text; leave it out."),
    ({"prefix": "=========="}, "The prefix contains the separator line =========="),
    ({"prefix": "thou shalt==========not"}, "The prefix contains the separator line =========="),
])
async def test_bad_requests_are_refused_before_logging(core, db, options, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        await core.ask(ADA, **options)
    assert await db.history("generations") == []


async def test_votes_tally_and_post_of_the_top_voted(core, db):
    result = await ask_for(core)
    first, second = result.candidates[:2]
    await core.vote(ADA, second.id, "👍")
    await core.vote(BOB, second.id, "👍")
    await core.vote(BOB, first.id, "👍")
    assert await core.vote(BOB, second.id, "👍", added=False) is True
    assert await core.vote(BOB, second.id, "👍", added=False) is False
    tally = {row.candidate_id: row.votes for row in await core.votes(ADA)}
    assert (tally[first.id], tally[second.id]) == (1, 1)
    assert await core.candidate_number(ADA, 2) == second.id

    posted = await core.post(ADA)       # a tie: the earlier candidate wins
    assert posted.candidate_id == first.id and posted.text == first.text
    assert posted.url.startswith("https://dry-run.invalid/posts/")
    assert (await db.get_post(posted.post_id)).status == "posted"
    audit = await db.history("audit")
    assert audit[0].action == "post" and posted.url in audit[0].detail

    with pytest.raises(AlreadyPosted) as refused:
        await core.post(ADA, first.id)
    assert refused.value.url == posted.url and posted.url in str(refused.value)

    await core.vote(ADA, second.id, "👍", added=False)
    await core.vote(BOB, first.id, "👍", added=False)
    later = await core.post(ADA, second.id)                  # the named one
    assert later.candidate_id == second.id
    assert [p.id for p in await core.history(ADA, 5)] == [later.post_id, posted.post_id]
    status = await core.status()
    assert (status.posts_last_24h, status.queue_length, status.publisher) == (2, 0, "dryrun")


async def test_post_without_votes_takes_the_first_and_failures_stay_postable(db, worker, sampler):
    publisher = FailingPublisher()
    core = make_core(db, worker, sampler, publisher)
    result = await ask_for(core)
    with pytest.raises(PostFailed, match="rate limited until 15:00. The candidate can be posted again"):
        await core.post(ADA)
    failed = (await db.history("posts"))[0]
    assert (failed.status, failed.candidate_id) == ("failed", result.candidates[0].id)
    publisher.fail = False
    posted = await core.post(ADA)
    assert posted.candidate_id == result.candidates[0].id and posted.post_id == failed.id


async def test_an_ask_stopped_mid_sample_is_logged_failed_not_left_pending(db, sampler):
    """The bot stopping (the ask's task cancelled) while the model samples: the generation ends failed, saying why."""
    started, release = threading.Event(), threading.Event()

    class Held:
        """The session's sampler, held mid-sample until the test lets go."""

        def candidates(self, request):
            started.set()
            release.wait(60)
            return sampler.candidates(request)

    async with ModelWorker(Held) as worker:
        asking = asyncio.create_task(make_core(db, worker, sampler).ask(ADA, count=1))
        assert await asyncio.to_thread(started.wait, 60)
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        release.set()
    generation = await db.latest_generation("test", "c1", include_unfinished=True)
    assert (generation.status, generation.error) == ("failed", "interrupted while sampling (CancelledError)")
    assert generation.candidates == ()


async def test_nothing_asked_in_this_channel_yet(core):
    with pytest.raises(NothingToPost, match="No candidates in this channel yet"):
        await core.post(Context("test", channel_id="elsewhere"))
    with pytest.raises(NothingToPost):
        await core.votes(Context("test", channel_id="elsewhere"))


async def test_reactions_on_candidate_messages_are_votes(core, db):
    result = await ask_for(core)
    first, second = result.candidates[:2]
    await core.shown_in(first.id, "m1")
    await core.shown_in(second.id, "m2")
    assert await core.react(ADA, "m1", "👍") == first.id
    assert await core.react(BOB, "m1", "👍") == first.id
    assert await core.react(BOB, "m1", "🔥") == first.id
    assert await core.react(ADA, "elsewhere", "👍") is None          # a message that shows no candidate
    assert await core.react(Context("other", user_id="u1"), "m1", "👍") is None   # same id, another platform
    assert [row.votes for row in await core.votes(ADA)][:2] == [3, 0]
    await core.react(BOB, "m1", "👍", added=False)
    assert [row.votes for row in await core.votes(ADA)][:2] == [2, 0]
    assert await core.clear_reactions(ADA, "m1", "🔥") == 1
    assert await core.clear_reactions(ADA, "m1") == 1
    assert [row.votes for row in await core.votes(ADA)][:2] == [0, 0]
