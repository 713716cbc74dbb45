"""The Mastodon publisher through Mastodon.py's real HTTP code, against a loopback fake instance."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from chatbot.publishers import BadCredentials, PublishError, RateLimited, Unavailable
from chatbot.publishers.mastodon import MastodonPublisher
from tests.fakes.loopback import Reply, guard_network
from tests.fakes.mastodon_api import UNAVAILABLE, FakeMastodon, rate_limited
from tests.test_publish_x import Sleeps

TOKEN = "mastodonTESTaccessTOKEN0000000000000000000000"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    guard_network(monkeypatch)


@pytest.fixture
def fake():
    with FakeMastodon(TOKEN) as server:
        yield server


def publisher_for(fake, token=TOKEN, sleeps=None, **options) -> MastodonPublisher:
    return MastodonPublisher(fake.url, token, sleep=Sleeps() if sleeps is None else sleeps, **options)


async def test_a_status_goes_out_with_the_token_and_an_idempotency_key(fake):
    result = await publisher_for(fake).publish("thou shalt — ünïcode 🦉")
    [request] = fake.requests                       # creating the client asked the instance nothing
    assert request.route == "POST /api/v1/statuses" and request.form()["status"] == "thou shalt — ünïcode 🦉"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert re.fullmatch(r"proverbot-[0-9a-f]{32}", request.headers["Idempotency-Key"])
    assert fake.texts() == ["thou shalt — ünïcode 🦉"]
    assert result.url == f"{fake.url}/@proverbot/{result.remote_id}"


async def test_doctor_call_says_who_the_token_posts_as(fake):
    assert await publisher_for(fake).verify() == ("the instance answers and accepts the access token: posting as "
                                                  "@proverbot")
    assert [r.route for r in fake.requests] == ["GET /api/v1/accounts/verify_credentials"]


async def test_a_wrong_token_is_named(fake):
    publisher = publisher_for(fake, token="wrong")
    message = f"{fake.url} answers, but refused the access token (401 Unauthorized: The access token is invalid)"
    for call in (publisher.publish("a proverb"), publisher.verify()):
        with pytest.raises(BadCredentials, match=re.escape(message)):
            await call
    assert fake.statuses == {}


async def test_a_429_says_until_when_without_waiting(fake):
    reset = (datetime.now(UTC) + timedelta(minutes=10)).replace(second=30, microsecond=0)
    fake.failures.append(rate_limited(reset))
    sleeps = Sleeps()
    with pytest.raises(RateLimited) as refused:
        await publisher_for(fake, sleeps=sleeps).publish("a proverb")
    assert str(refused.value) == f"Mastodon rate limited posting until {reset:%H:%M} UTC."
    assert len(fake.requests) == 1 and sleeps == []


async def test_unavailable_is_retried_then_posts(fake):
    fake.failures.append(UNAVAILABLE)
    sleeps = Sleeps()
    await publisher_for(fake, sleeps=sleeps).publish("a proverb")
    assert fake.texts() == ["a proverb"] and sleeps == [2.0]


async def test_a_lost_answer_is_retried_with_the_same_key_and_posts_once(fake):
    fake.lose_answers = 1       # the instance posts it, but answers 503
    result = await publisher_for(fake).publish("a proverb")
    creates = fake.received("POST /api/v1/statuses")
    assert len(creates) == 2 and creates[0].headers["Idempotency-Key"] == creates[1].headers["Idempotency-Key"]
    assert fake.texts() == ["a proverb"] and list(fake.statuses) == [result.remote_id]


async def test_a_refused_status_says_why_and_is_not_retried(fake):
    fake.failures.append(Reply(422, {"error": "Validation failed: Text character limit of 500 exceeded"}))
    with pytest.raises(PublishError, match=re.escape("Mastodon refused the post (422 Unprocessable Entity: Validation "
                                                     "failed: Text character limit of 500 exceeded).")):
        await publisher_for(fake).publish("a proverb")
    assert len(fake.requests) == 1


async def test_a_url_that_is_no_mastodon_instance(fake):
    publisher = MastodonPublisher(f"{fake.url}/nothing-here", TOKEN)
    with pytest.raises(PublishError, match="does not look like a Mastodon instance"):
        await publisher.verify()


async def test_an_instance_that_cannot_be_reached(fake):
    url = fake.url
    fake.__exit__(None, None, None)         # nothing listens on that port any more
    with pytest.raises(Unavailable, match=r"Mastodon could not be reached \(ConnectionError\). Tried 2 times."):
        await MastodonPublisher(url, TOKEN, attempts=2, sleep=Sleeps()).publish("a proverb")
