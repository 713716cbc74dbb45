"""The X publisher through tweepy's real HTTP code: the signed request goes, through a transport adapter mounted on
tweepy's session, to a loopback fake of X that checks the OAuth 1.0a signature and answers X's shapes."""

import json
import logging
import re
import time
from datetime import UTC, datetime

import pytest

from chatbot.config import load_settings
from chatbot.publishers import (
    BadCredentials,
    Duplicate,
    OutcomeUnknown,
    RateLimited,
    Unavailable,
)
from chatbot.publishers.credentials import CredentialsError, XCredentials, x_credentials
from chatbot.publishers.twitter import XPublisher
from tests.fakes.loopback import Reply, guard_network, route_session
from tests.fakes.x_api import UNAVAILABLE, FakeX, problem, rate_limited

KEYS = {"consumer_key": "ckTESTconsumerKEY0000000a",
        "consumer_secret": "csTESTconsumerSECRET000000000000000000000000000b",
        "access_token": "1234567890-atTESTaccessTOKEN00000000000000000c",
        "access_token_secret": "asTESTaccessSECRET0000000000000000000000000d"}
ENV = {"TWITTER_CONSUMER_KEY": KEYS["consumer_key"], "TWITTER_CONSUMER_SECRET": KEYS["consumer_secret"],
       "TWITTER_ACCESS_TOKEN": KEYS["access_token"], "TWITTER_ACCESS_TOKEN_SECRET": KEYS["access_token_secret"]}
TUTORIAL_FILE = {"consumer_key": KEYS["consumer_key"], "consumer_secret": KEYS["consumer_secret"],
                 "access_key": KEYS["access_token"], "access_secret": KEYS["access_token_secret"]}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    guard_network(monkeypatch)


@pytest.fixture
def fake():
    with FakeX(*KEYS.values()) as server:
        yield server


class Sleeps(list):
    """An injected sleep that records the backoff instead of waiting."""

    async def __call__(self, seconds):
        self.append(seconds)


def publisher_for(fake, sleeps=None, timeout=5.0, attempts=3, **keys) -> XPublisher:
    credentials = XCredentials(**{**KEYS, **keys}, source="the test")
    publisher = XPublisher(credentials, timeout=timeout, attempts=attempts,
                           sleep=Sleeps() if sleeps is None else sleeps)
    route_session(publisher.client.session, fake.origin, fake.url)
    return publisher


async def test_a_tweet_goes_out_through_create_tweet_signed_with_the_four_keys(fake):
    result = await publisher_for(fake).publish("thou shalt not — “quote” ünïcode 🦉")
    [request] = fake.received("POST /2/tweets")
    assert request.json() == {"text": "thou shalt not — “quote” ünïcode 🦉"}
    assert "Tweepy/4." in request.headers["User-Agent"] and request.headers["Authorization"].startswith("OAuth ")
    assert fake.verified == 1 and fake.tweets == {result.remote_id: "thou shalt not — “quote” ünïcode 🦉"}
    assert result.url == f"https://x.com/i/web/status/{result.remote_id}"


async def test_doctor_call_says_who_the_credentials_post_as(fake):
    assert await publisher_for(fake).verify() == "all four credentials work: posting as @proverbot (user id 1234567890)"
    assert [r.route for r in fake.requests] == ["GET /2/users/me"]


@pytest.mark.parametrize("wrong, message", [
    ({"access_token_secret": "asWRONGaccessSECRET000000000000000000000000"},
     ("the consumer key and secret work (X issued an app-only token with them), so the access token or the access "
      "token secret is wrong or was revoked")),
    ({"consumer_secret": "csWRONGconsumerSECRET00000000000000000000000000"},
     "the consumer key or the consumer secret (the app's API key and secret) is wrong or was regenerated"),
    ({"access_token": "atNOTanACCESStoken000000000000000000000000000"},
     "the access token does not look like one"),
    ({"consumer_key": "ck with space"}, "the consumer key (API key) contains a space"),
])
async def test_a_refused_credential_is_named(fake, wrong, message):
    publisher = publisher_for(fake, **wrong)
    with pytest.raises(BadCredentials, match=re.escape(message)):
        await publisher.publish("a proverb")
    with pytest.raises(BadCredentials, match=re.escape(message)):
        await publisher.verify()
    assert fake.tweets == {} and fake.verified == 0


async def test_a_duplicate_is_refused_as_duplicate_content_and_not_retried(fake):
    sleeps = Sleeps()
    publisher = publisher_for(fake, sleeps)
    await publisher.publish("the same words")
    with pytest.raises(Duplicate, match="X refused it as duplicate content"):
        await publisher.publish("the same words")
    assert len(fake.received("POST /2/tweets")) == 2 and sleeps == []


async def test_a_429_says_until_when_and_is_not_retried(fake):
    reset = int(time.time()) + 900
    fake.failures.append(rate_limited(reset))
    sleeps = Sleeps()
    with pytest.raises(RateLimited) as refused:
        await publisher_for(fake, sleeps).publish("a proverb")
    until = datetime.fromtimestamp(reset, UTC).strftime("%H:%M")
    assert str(refused.value) == f"X rate limited posting until {until} UTC."
    assert len(fake.requests) == 1 and sleeps == [] and fake.tweets == {}


async def test_a_429_without_reset_header_fails_at_once_instead_of_looping(fake):
    fake.failures.append(problem(429, "Too Many Requests", "Too Many Requests"))
    publisher = publisher_for(fake)
    assert publisher.client.wait_on_rate_limit is False
    with pytest.raises(RateLimited, match="did not say until when; try again in 15 minutes"):
        await publisher.publish("a proverb")
    assert len(fake.requests) == 1


async def test_x_unavailable_is_retried_with_backoff_then_posts(fake):
    fake.failures.extend([UNAVAILABLE, UNAVAILABLE])
    sleeps = Sleeps()
    result = await publisher_for(fake, sleeps).publish("a proverb")
    assert fake.tweets == {result.remote_id: "a proverb"}
    assert sleeps == [2.0, 4.0] and len(fake.received("POST /2/tweets")) == 3


async def test_x_unavailable_past_the_bound_fails(fake):
    fake.failures.extend([UNAVAILABLE] * 5)
    sleeps = Sleeps()
    with pytest.raises(Unavailable) as failed:
        await publisher_for(fake, sleeps).publish("a proverb")
    assert str(failed.value) == "X is unavailable (503 Service Unavailable: Service Unavailable). Tried 3 times."
    assert sleeps == [2.0, 4.0] and len(fake.received("POST /2/tweets")) == 3 and fake.tweets == {}


async def test_a_slow_answer_times_out(fake):
    fake.failures.append(Reply(201, {"data": {"id": "1", "text": "late"}}, delay=0.6))
    with pytest.raises(Unavailable, match=r"^X did not answer within 0.2 s. Tried 1 time.$"):
        await publisher_for(fake, timeout=0.2, attempts=1).publish("a proverb")


async def test_a_retry_refused_as_duplicate_after_a_lost_answer_is_an_unknown_outcome(fake):
    fake.lose_answers = 1       # X posts it, but the answer is a 503
    with pytest.raises(OutcomeUnknown, match="duplicate content.*An earlier try got no clear answer"):
        await publisher_for(fake).publish("a proverb")
    assert list(fake.tweets.values()) == ["a proverb"]


async def test_no_secret_is_ever_logged_or_printed(fake, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    messages = []
    await publisher_for(fake).publish("a proverb")
    for wrong in ({"access_token_secret": "asWRONG"}, {"consumer_secret": "csWRONG"}):
        publisher = publisher_for(fake, **wrong)
        messages.append(repr(publisher.credentials))
        for call in (publisher.publish("another proverb"), publisher.verify()):
            with pytest.raises(BadCredentials) as refused:
                await call
            messages.append(str(refused.value))
    out, err = capsys.readouterr()
    seen = "\n".join([caplog.text, out, err, *messages])
    assert "POST /2/tweets" in caplog.text or "/2/tweets" in caplog.text     # the log did record the traffic
    for secret in [*KEYS.values(), "asWRONG", "csWRONG"]:
        assert secret not in seen


# -- credentials ----------------------------------------------------------------------------------------------

@pytest.fixture
def settings(monkeypatch, tmp_path):
    """load_settings, with nothing from the environment or files of the machine running the tests."""
    for name in [*ENV, *(f"PROVERBOT_{name}" for name in ENV), "PROVERBOT_CONFIG", "PROVERBOT_ENV_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return load_settings


def test_credentials_from_the_settings(settings, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, f" {value}\n")
    credentials = x_credentials(settings())
    assert credentials == XCredentials(**KEYS, source="the twitter_* settings")
    assert KEYS["consumer_secret"] not in repr(credentials)


def test_credentials_from_the_tutorials_file_and_the_settings_first(settings, tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({key: f" {value}\n" for key, value in TUTORIAL_FILE.items()}))
    assert x_credentials(settings(twitter_credentials_file=path)) == XCredentials(**KEYS, source=str(path))
    from_settings = settings(twitter_credentials_file=path,
                             **{f"twitter_{field}": value for field, value in KEYS.items()})
    assert x_credentials(from_settings).source == "the twitter_* settings"
    assert x_credentials(settings()) is None


def test_incomplete_settings_name_the_missing_ones(settings, monkeypatch):
    for name, value in ENV.items():
        if name != "TWITTER_ACCESS_TOKEN_SECRET":
            monkeypatch.setenv(name, value)
    with pytest.raises(CredentialsError, match=re.escape("twitter_access_token_secret (TWITTER_ACCESS_TOKEN_SECRET) is "
                                                         "not set (all four twitter_* settings are needed)")):
        x_credentials(settings())


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("folder", "cannot be read: Is a directory"),
    ('{"consumer_key": "x",', "is not valid JSON (Expecting property name enclosed in double quotes at line 1"),
    ('["a list"]', "must hold one JSON object with the keys consumer_key, consumer_secret, access_key, access_secret"),
    ("b\xe9", "is not UTF-8 text"),
])
def test_an_unusable_credentials_file_is_a_clear_error(settings, tmp_path, content, message):
    path = tmp_path / "credentials.json"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(CredentialsError, match=re.escape(message)) as refused:
        x_credentials(settings(twitter_credentials_file=path))
    assert str(path) in str(refused.value)


def test_a_credentials_file_missing_keys_names_them_and_never_a_value(settings, tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({**TUTORIAL_FILE, "access_secret": "", "access_key": None}))
    with pytest.raises(CredentialsError) as refused:
        x_credentials(settings(twitter_credentials_file=path))
    assert "lacks access_key, access_secret (or they are empty or not text)" in str(refused.value)
    assert KEYS["consumer_secret"] not in str(refused.value) and KEYS["consumer_key"] not in str(refused.value)
