"""`proverbot doctor`, `post` and `tweet` as a user runs them, with the configured publishers built from settings
and the environment, against loopback fakes of X, Mastodon and Bluesky. Errors are one line, never a traceback,
and no secret is ever printed or logged."""

import json
import logging

import pytest

from chatbot.cli import main
from chatbot.config import load_settings
from chatbot.publishers import twitter
from chatbot.publishers.factory import build_publishers
from tests.fakes.bluesky_api import FakeBluesky
from tests.fakes.loopback import guard_network
from tests.fakes.mastodon_api import FakeMastodon
from tests.fakes.x_api import UNAVAILABLE, FakeX, sessions_to
from tests.test_publish_bluesky import APP_PASSWORD, HANDLE
from tests.test_publish_mastodon import TOKEN
from tests.test_publish_x import ENV, KEYS, TUTORIAL_FILE

SECRETS = [KEYS["consumer_key"], KEYS["consumer_secret"], KEYS["access_token"], KEYS["access_token_secret"], TOKEN,
           APP_PASSWORD]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No credentials from the machine running the tests, no proverbot.toml, no traffic beyond 127.0.0.1."""
    for name in [*ENV, *(f"PROVERBOT_{name}" for name in ENV), "PROVERBOT_CONFIG", "PROVERBOT_ENV_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    guard_network(monkeypatch)


@pytest.fixture
def fake_x(monkeypatch):
    with FakeX(*KEYS.values()) as server:
        monkeypatch.setattr(twitter, "TimeoutSession", sessions_to(server.url))
        yield server


@pytest.fixture
def fake_mastodon():
    with FakeMastodon(TOKEN) as server:
        yield server


@pytest.fixture
def fake_bluesky():
    with FakeBluesky(HANDLE, APP_PASSWORD) as server:
        yield server


def with_x(monkeypatch, **env):
    for name, value in {**ENV, **env}.items():
        monkeypatch.setenv(name, value)


def with_mastodon(monkeypatch, fake, token=TOKEN):
    monkeypatch.setenv("PROVERBOT_MASTODON_API_BASE_URL", fake.url)
    monkeypatch.setenv("PROVERBOT_MASTODON_ACCESS_TOKEN", token)


def with_bluesky(monkeypatch, fake, password=APP_PASSWORD):
    monkeypatch.setenv("PROVERBOT_BLUESKY_HANDLE", HANDLE)
    monkeypatch.setenv("PROVERBOT_BLUESKY_APP_PASSWORD", password)
    monkeypatch.setenv("PROVERBOT_BLUESKY_BASE_URL", fake.url)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def assert_no_secret(*texts):
    for secret in SECRETS:
        for text in texts:
            assert secret not in text


# -- which publishers ----------------------------------------------------------------------------------------

def test_no_credentials_means_the_dry_run(monkeypatch):
    publishers = build_publishers(load_settings())
    assert publishers.names == ("dryrun",)
    assert publishers.note == "dry run: no publisher has credentials, so posts go nowhere"


def test_every_configured_publisher_in_order_and_a_forced_dry_run(monkeypatch, fake_mastodon, fake_bluesky):
    with_x(monkeypatch)
    with_mastodon(monkeypatch, fake_mastodon)
    with_bluesky(monkeypatch, fake_bluesky)
    publishers = build_publishers(load_settings())
    assert publishers.names == ("x", "mastodon", "bluesky") and publishers.default.name == "x"
    assert [p.limits.posts_per_day for p in publishers] == [17, 48, 48]
    monkeypatch.setenv("PROVERBOT_PUBLISH_TO", "bluesky")
    monkeypatch.setenv("PROVERBOT_X_POSTS_PER_DAY", "0")
    publishers = build_publishers(load_settings())
    assert publishers.default.name == "bluesky" and publishers.get("x").limits.posts_per_day is None
    monkeypatch.setenv("PROVERBOT_DRY_RUN", "true")
    publishers = build_publishers(load_settings())
    assert publishers.names == ("dryrun",) and publishers.get("mastodon").name == "dryrun"
    assert publishers.note == "dry run (dry_run is set): nothing is posted on x, mastodon, bluesky"


@pytest.mark.parametrize("env, message", [
    ({"PROVERBOT_PUBLISH_TO": "mastodon"}, ("publish_to or publish_channels: Cannot post there: mastodon is not "
                                           "configured. Configured here: x")),
    ({"PROVERBOT_PUBLISH_CHANNELS": '{"discord:1": "myspace"}'}, "'myspace' is not one of x, mastodon, bluesky"),
    ({"PROVERBOT_MASTODON_API_BASE_URL": "https://example.social"},
     "mastodon_api_base_url is set but mastodon_access_token is not (PROVERBOT_MASTODON_ACCESS_TOKEN)"),
    ({"TWITTER_ACCESS_TOKEN": ""}, "twitter_access_token (TWITTER_ACCESS_TOKEN) is not set"),
])
def test_a_configuration_mistake_is_one_line(monkeypatch, capsys, env, message):
    with_x(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "post", "--text", "a proverb")
    assert code == 1 and err.count("\n") == 1 and message in err and err.startswith("proverbot: error: ")
    assert_no_secret(out, err)


def test_a_broken_credentials_file_is_one_line(monkeypatch, capsys, tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({k: v for k, v in TUTORIAL_FILE.items() if k != "access_secret"}))
    monkeypatch.setenv("PROVERBOT_TWITTER_CREDENTIALS_FILE", str(path))
    code, _out, err = run(capsys, "doctor")
    assert code == 1 and err == (f"proverbot: error: The X credentials file {path} (twitter_credentials_file) lacks "
                                 "access_secret (or it is empty or not text); it needs consumer_key, consumer_secret, "
                                 "access_key, access_secret.\n")


# -- doctor ---------------------------------------------------------------------------------------------------

def test_doctor_checks_every_publisher_and_says_what_works(monkeypatch, capsys, tmp_path, fake_x, fake_mastodon,
                                                           fake_bluesky):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(TUTORIAL_FILE))
    monkeypatch.setenv("PROVERBOT_TWITTER_CREDENTIALS_FILE", str(path))
    with_mastodon(monkeypatch, fake_mastodon)
    with_bluesky(monkeypatch, fake_bluesky)
    code, out, err = run(capsys, "doctor")
    assert code == 0, err
    assert out.splitlines() == [
        f"x: credentials from {path}",
        "x: ok: all four credentials work: posting as @proverbot (user id 1234567890)",
        f"mastodon: instance {fake_mastodon.url}, access token from the settings",
        "mastodon: ok: the instance answers and accepts the access token: posting as @proverbot",
        f"bluesky: handle @{HANDLE} on {fake_bluesky.url}, app password from the settings",
        f"bluesky: ok: the handle and app password work: posting as @{HANDLE} (did:plc:abcdefghijklmnopqrstuvwx)",
        "Posts go to x unless told otherwise."]
    assert [r.route for r in fake_x.requests] == ["GET /2/users/me"]


def test_doctor_fails_and_names_the_wrong_part_without_printing_a_secret(monkeypatch, capsys, caplog, fake_x,
                                                                         fake_mastodon):
    caplog.set_level(logging.DEBUG)
    with_x(monkeypatch, TWITTER_ACCESS_TOKEN_SECRET="asWRONGaccessSECRET000000000000000000000000")
    with_mastodon(monkeypatch, fake_mastodon, token="wrongTOKENvalue")
    code, out, err = run(capsys, "-v", "doctor")
    assert code == 1 and err.endswith("2 of 2 publishers failed the check.\n")
    assert ("x: FAILED: X refused the credentials (401 Unauthorized): the consumer key and secret work (X issued an "
            "app-only token with them), so the access token or the access token secret is wrong") in out
    assert f"mastodon: FAILED: {fake_mastodon.url} answers, but refused the access token" in out
    assert_no_secret(out, err, caplog.text)
    for wrong in ("asWRONGaccessSECRET000000000000000000000000", "wrongTOKENvalue"):
        assert wrong not in out + err + caplog.text


def test_doctor_without_credentials(capsys):
    code, out, _ = run(capsys, "doctor")
    assert code == 0 and out.startswith("No publisher has credentials: posts go to the dry run")


# -- post -----------------------------------------------------------------------------------------------------

def test_post_a_text_by_hand(monkeypatch, capsys, fake_mastodon):
    with_mastodon(monkeypatch, fake_mastodon)
    code, out, _ = run(capsys, "post", "--text", "by hand")
    assert code == 0 and out.startswith(f"Posted on mastodon: {fake_mastodon.url}/@proverbot/")
    assert fake_mastodon.texts() == ["by hand"]
    code, out, err = run(capsys, "post", "--text", "By  hand")      # a skip (4), said on stdout: cron mails nothing
    assert (code, err) == (4, "") and out.startswith("proverbot: skipped: That text was already posted on mastodon")
    code, out, _ = run(capsys, "history", "--kind", "posts", "--json")
    [post] = json.loads(out)
    assert (post["platform"], post["status"], post["text"]) == ("mastodon", "posted", "by hand")


def test_post_a_logged_candidate_to_a_chosen_publisher(monkeypatch, capsys, fake_x, fake_bluesky):
    with_x(monkeypatch)
    with_bluesky(monkeypatch, fake_bluesky)
    assert run(capsys, "post", "--text", "free text first")[0] == 0
    code, _, err = run(capsys, "post", "--candidate", "7", "--to", "bluesky")
    assert code == 1 and "There is no candidate #7 in the log." in err
    code, out, _ = run(capsys, "post", "--text", "to bluesky", "--to", "bluesky")
    assert code == 0 and out.startswith(f"Posted on bluesky: https://bsky.app/profile/{HANDLE}/post/")
    assert list(fake_x.tweets.values()) == ["free text first"] and fake_bluesky.texts() == ["to bluesky"]


def test_post_refuses_too_long_and_over_quota_before_calling_x(monkeypatch, capsys, fake_x):
    with_x(monkeypatch)
    monkeypatch.setenv("PROVERBOT_X_POSTS_PER_DAY", "1")
    code, _, err = run(capsys, "post", "--text", "鳥" * 141)
    assert code == 1 and "The text is 282 long by X's count" in err and "X allows at most 280" in err
    assert run(capsys, "post", "--text", "the only one today")[0] == 0
    code, out, err = run(capsys, "post", "--text", "one too many")
    assert (code, err) == (3, "") and out.startswith("proverbot: skipped: The posting quota on x is used up: 1 posts "
                                                     "in the last 24 hours, at most 1.")
    assert len(fake_x.requests) == 1


def test_a_failed_post_exits_non_zero_says_why_and_leaks_nothing(monkeypatch, capsys, caplog, fake_x):
    caplog.set_level(logging.DEBUG)
    with_x(monkeypatch)
    monkeypatch.setenv("PROVERBOT_PUBLISH_ATTEMPTS", "1")
    fake_x.failures.append(UNAVAILABLE)
    code, out, err = run(capsys, "-v", "post", "--text", "a proverb")
    assert code == 1 and err.endswith("proverbot: error: Posting on X failed: X is unavailable (503 Service "
                                      "Unavailable: Service Unavailable). Tried 1 time. The text can be posted "
                                      "again.\n")
    assert_no_secret(out, err, caplog.text)
    assert run(capsys, "post", "--text", "a proverb")[0] == 0        # postable again


# -- tweet ----------------------------------------------------------------------------------------------------

def tweet(capsys, trained_run, *argv):
    return run(capsys, "tweet", "--checkpoint-dir", str(trained_run.parent), "--length", "20", *argv)


def logged_candidates(capsys) -> list[str]:
    _code, out, _ = run(capsys, "history", "--kind", "candidates", "--json")
    return [c["text"] for c in json.loads(out) if c["usable"]]


def test_tweet_samples_picks_and_posts_one(monkeypatch, capsys, trained_run, fake_x):
    with_x(monkeypatch)
    code, out, err = tweet(capsys, trained_run, "--count", "3", "--seed", "11", "--temperature", "1.0")
    assert code == 0, err
    assert err == "" and out.splitlines()[1].startswith("Posted on x: https://x.com/i/web/status/")
    [text] = fake_x.tweets.values()
    assert "usable candidates from" in out and text == out.splitlines()[2] and text in logged_candidates(capsys)


def test_tweet_best_picks_the_highest_score_and_skips_what_was_posted(monkeypatch, capsys, trained_run):
    from chatbot.publish_cli import score

    argv = ("--count", "2", "--seed", "5", "--temperature", "1.0", "--pick", "best")
    code, out, err = tweet(capsys, trained_run, *argv)
    assert code == 0 and out.splitlines()[1].startswith("Posted on dryrun: https://dry-run.invalid/posts/"), err
    usable = logged_candidates(capsys)
    first = out.splitlines()[2]
    assert score(first) == max(score(text) for text in usable)
    if len(usable) < 2:
        pytest.skip("the tiny model gave one usable candidate")
    code, out, _ = tweet(capsys, trained_run, *argv)      # the same seed: the same candidates
    assert code == 0 and out.splitlines()[2] != first
    code, out, err = tweet(capsys, trained_run, *argv)
    assert (code, err) == (4, "")
    assert "proverbot: skipped: Nothing to post from generation #3: all of them were posted before" in out


def test_tweet_exits_non_zero_when_posting_fails(monkeypatch, capsys, trained_run, fake_x):
    with_x(monkeypatch)
    monkeypatch.setenv("PROVERBOT_PUBLISH_ATTEMPTS", "1")
    fake_x.failures.append(UNAVAILABLE)
    code, _, err = tweet(capsys, trained_run, "--count", "2", "--seed", "3")
    assert code == 1 and "Posting on X failed: X is unavailable" in err and "can be posted again" in err
    code, _, err = tweet(capsys, trained_run, "--to", "mastodon")
    assert code == 1 and "mastodon is not configured" in err
