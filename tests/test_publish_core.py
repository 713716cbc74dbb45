"""Posting through the core and the Poster with the real publishers against loopback fakes and a real SQLite log:
each platform's length rule, earlier posts and the quota are checked before any call, and each outcome is logged."""

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from chatbot.context import Context
from chatbot.core import Core, ModelInfo
from chatbot.posting import Poster, PostFailed, PostUnknown
from chatbot.publishers import TooLong
from chatbot.publishers.credentials import XCredentials
from chatbot.publishers.dryrun import DryRunPublisher
from chatbot.publishers.lengths import bluesky_limits, mastodon_length, mastodon_limits, x_limits
from chatbot.publishers.mastodon import MastodonPublisher
from chatbot.publishers.registry import Publishers, UnknownPublisher
from chatbot.publishers.twitter import XPublisher
from storage import AlreadyPosted, NewCandidate, PostInProgress, QuotaReached
from tests.fakes.loopback import guard_network, route_session
from tests.fakes.mastodon_api import FakeMastodon
from tests.fakes.x_api import UNAVAILABLE, FakeX
from tests.test_publish_mastodon import TOKEN
from tests.test_publish_x import KEYS, Sleeps

ADA = Context("discord", channel_id="c1", user_id="u1", user_name="ada")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    guard_network(monkeypatch)


@pytest.fixture
def fake_x():
    with FakeX(*KEYS.values()) as server:
        yield server


@pytest.fixture
def fake_mastodon():
    with FakeMastodon(TOKEN) as server:
        yield server


def x_publisher(fake, posts_per_day=17) -> XPublisher:
    publisher = XPublisher(XCredentials(**KEYS, source="the test"), posts_per_day=posts_per_day, sleep=Sleeps())
    route_session(publisher.client.session, fake.origin, fake.url)
    return publisher


async def candidate(db, text: str) -> int:
    generation = await db.record_generation("discord", channel_id="c1")
    return (await db.finish_generation(generation, [NewCandidate(text)])).candidates[0].id


# -- length rules ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("limits, fits, too_long, message", [
    (x_limits(), "a" * 280, "a" * 281, ("The text is 281 long by X's count (links count 23, CJK characters and "
                                         "emoji 2); X allows at most 280.")),
    (x_limits(), "鳥" * 140, "鳥" * 141, "The text is 282 long by X's count"),
    (x_limits(), "see https://example.org/" + "x" * 300 + " " + "a" * 252, "https://example.org/ " + "a" * 257,
     "The text is 281 long"),
    (mastodon_limits(), "a" * 500, "a" * 501, ("The text is 501 characters long by Mastodon's count (links count 23); "
     "X allows at most 500.")),
    (mastodon_limits(), "https://example.org/" + "x" * 600 + " " + "a" * 476, "@ada@example.social " + "a" * 496,
     "The text is 501 characters long"),
    (bluesky_limits(), "👨‍👩‍👧" * 300, "é" * 301, "The text is 301 graphemes long; X allows at most 300."),
])
def test_each_platform_counts_its_own_way(limits, fits, too_long, message):
    limits.check("X", fits)
    with pytest.raises(TooLong, match=re.escape(message)):
        limits.check("X", too_long)


def test_mastodon_counts_a_remote_mention_by_its_user_name():
    assert mastodon_length("@ada@example.social hi") == len("@ada hi")


# -- the poster -----------------------------------------------------------------------------------------------

async def test_a_post_is_checked_recorded_published_and_settled(db, fake_x):
    poster = Poster(db, x_publisher(fake_x))
    posted = await poster.post(ADA, await candidate(db, "thou shalt post once"))
    assert list(fake_x.tweets.values()) == ["thou shalt post once"]
    post = await db.get_post(posted.post_id)
    assert (post.status, post.platform, post.url, post.remote_id) == ("posted", "x", posted.url,
                                                                      next(iter(fake_x.tweets)))
    assert (await db.history("audit"))[0].detail == f"discord/c1 → x posted: {posted.url}"


async def test_too_long_is_refused_before_anything_is_recorded_or_sent(db, fake_x):
    with pytest.raises(TooLong, match="The text is 282 long by X's count"):
        await Poster(db, x_publisher(fake_x)).post(ADA, text="鳥" * 141)
    assert fake_x.requests == [] and await db.history("posts") == []


async def test_an_earlier_post_is_refused_before_any_call(db, fake_x):
    poster = Poster(db, x_publisher(fake_x))
    first = await poster.post(ADA, text="Thou shalt  not repeat")
    with pytest.raises(AlreadyPosted, match=re.escape(first.url)):
        await poster.post(ADA, text="thou shalt not repeat")
    assert len(fake_x.requests) == 1


async def test_the_quota_is_counted_from_the_log(db, fake_x):
    poster = Poster(db, x_publisher(fake_x, posts_per_day=2))
    await db.settle_post((await db.begin_post("x", text="posted by an earlier run")).id, "posted",
                         at=datetime.now(UTC) - timedelta(hours=23))
    await poster.post(ADA, text="one")
    with pytest.raises(QuotaReached, match=r"The posting quota on x is used up: 2 posts in the last 24 hours, at most "
                                           r"2. The next post can go out at \d\d:\d\d UTC \(in 5\d min\)"):
        await poster.post(ADA, text="two")
    assert list(fake_x.tweets.values()) == ["one"]
    usage = (await poster.usage())[0]
    assert (usage.name, usage.title, usage.posts_last_24h, usage.quota, usage.left, usage.default) == (
        "x", "X", 2, 2, 0, True)


async def test_a_failure_is_logged_and_the_candidate_stays_postable(db, fake_x):
    fake_x.failures.extend([UNAVAILABLE] * 3)
    poster = Poster(db, x_publisher(fake_x))
    candidate_id = await candidate(db, "try me twice")
    with pytest.raises(PostFailed, match=r"^Posting on X failed: X is unavailable \(503 Service Unavailable: Service "
                                         r"Unavailable\). Tried 3 times. The candidate can be posted again.$"):
        await poster.post(ADA, candidate_id)
    failed = (await db.history("posts"))[0]
    assert (failed.status, failed.candidate_id) == ("failed", candidate_id) and "Tried 3 times" in failed.last_error
    again = await poster.post(ADA, candidate_id)
    assert again.post_id == failed.id and list(fake_x.tweets.values()) == ["try me twice"]


async def test_an_unclear_outcome_is_logged_unknown_and_never_retried_on_its_own(db, fake_x):
    fake_x.lose_answers = 1
    poster = Poster(db, x_publisher(fake_x))
    with pytest.raises(PostUnknown) as unclear:
        await poster.post(ADA, text="did it go out?")
    post = (await db.history("posts"))[0]
    assert post.status == "unknown" and "duplicate content" in post.last_error
    assert f"proverbot db settle-post {post.id} posted --url URL" in str(unclear.value)
    with pytest.raises(PostInProgress, match="unknown outcome"):
        await poster.post(ADA, text="did it go out?")
    assert len(fake_x.received("POST /2/tweets")) == 2 and len(fake_x.tweets) == 1


async def test_choosing_a_publisher_by_name_and_by_channel(db, fake_x, fake_mastodon):
    mastodon = MastodonPublisher(fake_mastodon.url, TOKEN, sleep=Sleeps())
    publishers = Publishers([x_publisher(fake_x), mastodon], channels={"discord:c2": "mastodon"})
    poster = Poster(db, publishers)
    assert (await poster.post(ADA, text="to the default")).platform == "x"
    assert (await poster.post(ADA, text="to mastodon", to="Mastodon")).platform == "mastodon"
    assert (await poster.post(Context("discord", channel_id="c2"), text="the channel's")).platform == "mastodon"
    assert (await poster.post(ADA, text="to the default", to="mastodon")).platform == "mastodon"   # per platform
    assert fake_mastodon.texts() == ["to mastodon", "the channel's", "to the default"]
    with pytest.raises(UnknownPublisher, match="bluesky is not configured. Configured here: x, mastodon"):
        await poster.post(ADA, text="nowhere", to="bluesky")
    with pytest.raises(UnknownPublisher, match="'myspace' is not one of x, mastodon, bluesky, dryrun"):
        await poster.post(ADA, text="nowhere", to="myspace")
    assert [u.name for u in await poster.usage()] == ["x", "mastodon"]


async def test_a_forced_dry_run_stands_in_for_the_configured_publishers(db):
    dry = DryRunPublisher()
    poster = Poster(db, Publishers([dry], stand_ins=["x", "mastodon"], note="dry run (dry_run is set)"))
    posted = await poster.post(ADA, text="rehearsal", to="x")
    assert posted.platform == "dryrun" and dry.published == ["rehearsal"]
    with pytest.raises(UnknownPublisher):
        await poster.post(ADA, text="rehearsal", to="bluesky")


# -- the core -------------------------------------------------------------------------------------------------

async def test_the_core_posts_where_asked_and_reports_every_publisher(db, worker, fake_x, fake_mastodon):
    mastodon = MastodonPublisher(fake_mastodon.url, TOKEN, posts_per_day=None, sleep=Sleeps())
    core = Core(db, worker, Publishers([x_publisher(fake_x), mastodon], note=""), ModelInfo("tiny", "abc", "cpu"))
    assert core.publisher.name == "x" and core.publishers.names == ("x", "mastodon")
    candidate_id = await candidate(db, "a winner")
    assert (await core.post(ADA, candidate_id, to="mastodon")).platform == "mastodon"
    assert (await core.post(ADA, candidate_id)).platform == "x"     # the same candidate, once per platform
    await core.post(ADA, text="free text")
    status = await core.status()
    assert (status.publisher, status.posts_last_24h) == ("x", 2)
    assert [(u.name, u.posts_last_24h, u.quota) for u in status.publishers] == [("x", 2, 17), ("mastodon", 1, None)]

    schedule = await core.set_schedule(ADA, "09:00", publisher="Mastodon")
    assert schedule.publisher == "mastodon"
    with pytest.raises(UnknownPublisher):
        await core.set_schedule(ADA, "09:00", publisher="bluesky")


class Hanging(DryRunPublisher):
    """A publisher whose platform never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()

    async def publish(self, text):
        self.called.set()
        await asyncio.Event().wait()


async def test_a_post_cancelled_mid_call_is_settled_unknown_at_once(db):
    publisher = Hanging()
    poster = Poster(db, publisher)
    posting = asyncio.create_task(poster.post(ADA, await candidate(db, "A stitch in time saves nine.")))
    await asyncio.wait_for(publisher.called.wait(), 10)
    posting.cancel()                                     # what stopping the bot does to a /post in flight
    with pytest.raises(asyncio.CancelledError):
        await posting
    [post] = await db.history("posts")
    assert (post.status, post.last_error) == ("unknown", "proverbot stopped while the post was being sent")
