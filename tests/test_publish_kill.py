"""Exactly once: a `proverbot post` killed (SIGKILL) after X received the post and before the log settled it leaves the
post pending (the command registered its process, like a bot), then "unknown" once its lease ran out and the bot
starts; nothing posts it again, and X received exactly one create."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import pytest

from storage import Database
from tests.conftest import ROOT
from tests.fakes.x_api import FakeX
from tests.test_publish_x import ENV, KEYS

TEXT = "a proverb posted once"


@pytest.fixture
def fake():
    with FakeX(*KEYS.values()) as server:
        yield server


def child(fake, url: str, *argv: str, **popen) -> subprocess.Popen:
    """`proverbot post --text TEXT` in a new process, its X traffic going to the fake."""
    env = {**os.environ, **ENV, "PROVERBOT_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.fakes.proverbot_with_fake_x", fake.url.rsplit(":", 1)[1], *argv]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def post_again(fake, url: str) -> tuple[int, str]:
    process = child(fake, url, "post", "--text", TEXT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


async def bot_start(url: str) -> tuple[int, object]:
    """What the bot's start-up does to the log: pending posts become unknown. Returns (how many, the post)."""
    db = Database(url)
    try:
        unknown = await db.start()
        return unknown, (await db.history("posts"))[0]
    finally:
        await db.close()


def test_killed_mid_post_becomes_unknown_and_is_never_posted_again(fake, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    fake.hold("POST /2/tweets")             # X creates the tweet, then its answer waits for `release`
    process = child(fake, url, "post", "--text", TEXT)
    try:
        assert fake.held.wait(120), process.communicate(timeout=10)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    fake.release.set()
    assert process.returncode == -signal.SIGKILL
    assert list(fake.tweets.values()) == [TEXT]

    code, err = post_again(fake, url)       # the post is still pending: refused, not sent
    assert code == 1 and "is being posted on x right now" in err and "Traceback" not in err

    with closing(sqlite3.connect(tmp_path / "log.db")) as log, log:  # its lease runs out (here: without the wait)
        log.execute("UPDATE processes SET lease_until = '2000-01-01 00:00:00.000000'")
    unknown, post = asyncio.run(bot_start(url))
    assert unknown == 1 and (post.status, post.platform, post.text) == ("unknown", "x", TEXT)

    code, err = post_again(fake, url)
    assert code == 1 and f"Post #{post.id} of that text on x has an unknown outcome" in err
    assert f"proverbot db settle-post {post.id} posted --url URL" in err
    assert len(fake.received("POST /2/tweets")) == 1
