"""The Bluesky publisher through atproto's real HTTP code (httpx), against a loopback fake PDS."""

import re
import time
from datetime import UTC, datetime

import pytest
from atproto_client.models.string_formats import TID_RE

from chatbot.publishers import BadCredentials, PublishError, RateLimited
from chatbot.publishers.bluesky import BlueskyPublisher
from tests.fakes.bluesky_api import (
    DID,
    UNAVAILABLE,
    FakeBluesky,
    rate_limited,
    xrpc_error,
)
from tests.fakes.loopback import guard_network
from tests.test_publish_x import Sleeps

HANDLE = "proverbot.test"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
LOGIN = ["POST /xrpc/com.atproto.server.createSession", "GET /xrpc/app.bsky.actor.getProfile"]
CREATE = "POST /xrpc/com.atproto.repo.createRecord"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    guard_network(monkeypatch)


@pytest.fixture
def fake():
    with FakeBluesky(HANDLE, APP_PASSWORD) as server:
        yield server


def publisher_for(fake, handle=HANDLE, password=APP_PASSWORD, sleeps=None, **options) -> BlueskyPublisher:
    return BlueskyPublisher(handle, password, base_url=fake.url, sleep=Sleeps() if sleeps is None else sleeps,
                            **options)


async def test_a_post_logs_in_once_and_creates_a_record(fake):
    publisher = publisher_for(fake)
    first = await publisher.publish("thou shalt read https://example.org/proverbs #wisdom")
    await publisher.publish("and another")
    assert [r.route for r in fake.requests] == [*LOGIN, CREATE, CREATE]
    request = fake.received(CREATE)[0].json()
    record = request["record"]
    assert request["repo"] == DID and request["collection"] == "app.bsky.feed.post"
    assert TID_RE.match(request["rkey"]) and record["$type"] == "app.bsky.feed.post"
    assert record["text"] == "thou shalt read https://example.org/proverbs #wisdom"
    assert abs(datetime.fromisoformat(record["createdAt"]) - datetime.now(UTC)).total_seconds() < 60
    features = [facet["features"][0] for facet in record["facets"]]
    assert features == [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.org/proverbs"},
                        {"$type": "app.bsky.richtext.facet#tag", "tag": "wisdom"}]
    assert first.remote_id == f"at://{DID}/app.bsky.feed.post/{request['rkey']}"
    assert first.url == f"https://bsky.app/profile/{HANDLE}/post/{request['rkey']}"


async def test_doctor_call_logs_in(fake):
    assert await publisher_for(fake).verify() == f"the handle and app password work: posting as @{HANDLE} ({DID})"
    assert [r.route for r in fake.requests] == LOGIN


@pytest.mark.parametrize("handle, password, message", [
    (HANDLE, "zzzz-zzzz-zzzz-zzzz",
     f"the handle @{HANDLE} exists ({DID}), so the app password is wrong or was revoked."),
    (HANDLE, "my main password", "It does not look like an app password (xxxx-xxxx-xxxx-xxxx)"),
    ("nobody.test", APP_PASSWORD, "the handle @nobody.test does not resolve; check bluesky_handle"),
])
async def test_a_refused_login_names_what_is_wrong(fake, handle, password, message):
    publisher = publisher_for(fake, handle, password)
    for call in (publisher.publish("a proverb"), publisher.verify()):
        with pytest.raises(BadCredentials, match=re.escape(message)) as refused:
            await call
        assert ("Bluesky refused the login (401 AuthenticationRequired: Invalid identifier or password)"
                in str(refused.value))
        assert password not in str(refused.value)
    assert fake.records == {}


async def test_a_429_says_until_when(fake):
    reset = int(time.time()) + 600
    fake.failures.append(rate_limited(reset))
    with pytest.raises(RateLimited) as refused:
        await publisher_for(fake).publish("a proverb")
    assert str(refused.value) == f"Bluesky rate limited posting until {datetime.fromtimestamp(reset, UTC):%H:%M} UTC."
    assert len(fake.received(CREATE)) == 1


async def test_unavailable_is_retried_after_checking_the_record_is_not_there(fake):
    fake.failures.append(UNAVAILABLE)
    sleeps = Sleeps()
    await publisher_for(fake, sleeps=sleeps).publish("a proverb")
    assert [r.route for r in fake.requests][2:] == [CREATE, "GET /xrpc/com.atproto.repo.getRecord", CREATE]
    assert fake.texts() == ["a proverb"] and sleeps == [2.0]


async def test_a_lost_answer_is_found_instead_of_posted_again(fake):
    fake.lose_answers = 1           # the PDS stores the record, but the answer is a 503
    result = await publisher_for(fake).publish("a proverb")
    assert len(fake.received(CREATE)) == 1 and fake.texts() == ["a proverb"]
    assert result.remote_id.endswith("/" + next(iter(fake.records)))


async def test_a_refused_record_says_why(fake):
    fake.failures.append(xrpc_error(400, "InvalidRequest", "Invalid app.bsky.feed.post record"))
    with pytest.raises(PublishError, match=re.escape("Bluesky refused the post (400 InvalidRequest: Invalid "
                                                     "app.bsky.feed.post record).")):
        await publisher_for(fake).publish("a proverb")
