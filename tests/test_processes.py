"""Several bot processes on one log (issue 14): each registers and beats, and only the pending posts and
generations of a process that stopped beating (or, past a cutoff, of none) are settled, never a live one's.

On a real SQLite file, and on PostgreSQL when PROVERBOT_TEST_POSTGRES_URL names a server. The processes are real
ones: storage-level bots (tests/fixtures/storage/writer.py, mode "bot"), then two `proverbot run`, one SIGKILLed while
X holds its post.
"""

import asyncio
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from chatbot.config import ConfigError, load_settings
from storage import Database
from tests.conftest import ROOT
from tests.fakes.x_api import FakeX
from tests.test_console import run_env
from tests.test_publish_x import ENV, KEYS
from tests.test_storage_api import fresh_url

WRITER = Path(__file__).resolve().parent / "fixtures" / "storage" / "writer.py"
BEAT = 2.0  # seconds between heartbeats: a process silent for 3 of them has stopped


@pytest_asyncio.fixture(params=["sqlite", "postgres"], loop_scope="function")
async def url(request, tmp_path) -> str:
    return await fresh_url(request.param, tmp_path)


async def started(url: str, recover: bool = True) -> Database:
    db = Database(url, heartbeat_s=BEAT)
    await db.start(recover=recover)
    return db


async def test_a_live_process_keeps_its_pending_rows_when_another_starts_and_beats(url):
    first = await started(url)
    cli = await started(url, recover=False)     # a program that registers no process (or a row before 0004)
    second = None
    try:
        me = await first.register_process()
        post = await first.begin_post("x", text="in flight")
        gid = await first.record_generation("discord", channel_id="c1")
        assert post.owner_id == me and (await first.get_generation(gid)).owner_id == me
        by_cli = await cli.begin_post("x", text="an unowned post")
        assert by_cli.owner_id is None

        second = await started(url)                 # a bot's start settles what has no owner, not a live bot's
        assert await second.register_process() not in (None, me)
        assert await second.beat() == 0
        assert await second.mark_stale_posts_unknown(datetime.now(UTC) + timedelta(hours=1)) == 0
        assert await second.fail_stale_generations(datetime.now(UTC) + timedelta(hours=1)) == 0
        assert (await second.get_post(post.id)).status == "pending"
        assert (await second.get_generation(gid)).status == "pending"
        assert (await second.get_post(by_cli.id)).status == "unknown"
    finally:
        for db in (first, cli, second):
            if db is not None:
                await db.close()


async def test_a_closed_process_rows_are_settled_at_the_next_beat_of_another(url):
    first = await started(url)
    await first.register_process()
    post = await first.begin_post("x", text="begun, then the bot stopped")
    gid = await first.record_generation("discord", channel_id="c1")
    await first.close()                     # removes its process row: nothing of it is live any more
    second = await started(url, recover=False)
    try:
        await second.register_process()
        own = await second.begin_post("mastodon", text="the live bot's own")
        assert await second.beat() == 1
        settled = await second.get_post(post.id)
        assert settled.status == "unknown" and "stopped while posting" in settled.last_error
        assert (await second.get_generation(gid)).status == "failed"
        assert (await second.get_post(own.id)).status == "pending"
        assert await second.beat() == 0     # settled once
    finally:
        await second.close()


async def test_each_process_keeps_the_lease_of_its_own_heartbeat(url):
    slow = Database(url, heartbeat_s=3600)      # alive for 3 hours past each beat
    await slow.start()
    quick = Database(url, heartbeat_s=0.001)    # settles anything whose own lease ran out, not a 3 ms lease
    try:
        await slow.register_process()
        post = await slow.begin_post("x", text="from a slow beater")
        await quick.start()
        await quick.register_process()
        assert await quick.beat() == 0
        assert (await quick.get_post(post.id)).status == "pending"
    finally:
        await quick.close()
        await slow.close()


async def test_a_cli_post_in_flight_is_left_alone_by_a_bot_that_starts(url, monkeypatch):
    from chatbot.app import cli_log, open_log

    monkeypatch.setenv("PROVERBOT_DATABASE_URL", url)
    monkeypatch.setenv("PROVERBOT_HEARTBEAT_S", str(BEAT))
    settings = load_settings()
    async with cli_log(settings) as cli:        # `proverbot tweet` or `post`, its post in flight
        post = await cli.begin_post("x", text="a CLI post in flight")
        assert post.owner_id == cli.process_id is not None
        bot = await open_log(settings)
        try:
            assert (await bot.get_post(post.id)).status == "pending"
            assert await bot.beat() == 0
        finally:
            await bot.close()
        await cli.settle_post(post.id, "posted", remote_id="1", url="https://x.com/p/1")
    reader = await started(url, recover=False)
    try:
        assert (await reader.get_post(post.id)).status == "posted"
    finally:
        await reader.close()


async def test_on_postgresql_leases_go_by_the_server_clock_not_a_host_that_is_an_hour_behind(tmp_path, monkeypatch):
    url = await fresh_url("postgres", tmp_path)
    behind = await started(url)
    ahead = await started(url)
    try:
        with monkeypatch.context() as patch:     # the first bot's host: its clock is an hour slow
            patch.setattr("storage.db.utcnow", lambda: datetime.now(UTC) - timedelta(hours=1))
            await behind.register_process()
            await behind.beat()
            post = await behind.begin_post("x", text="in flight on the slow host")
        await ahead.register_process()
        assert await ahead.beat() == 0
        assert (await ahead.get_post(post.id)).status == "pending"
    finally:
        await ahead.close()
        await behind.close()


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "soon", "7200"])
def test_a_bad_heartbeat_setting_is_one_line_naming_it(monkeypatch, tmp_path, bad):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROVERBOT_HEARTBEAT_S", bad)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith("Bad setting heartbeat_s (environment PROVERBOT_HEARTBEAT_S): ") and "\n" not in message


def test_the_heartbeat_must_be_a_positive_number_of_seconds():
    for bad in (0, -1.0, float("nan"), float("inf"), 1e308):
        with pytest.raises(ValueError, match="heartbeat_s must be a positive number of seconds, at most a day"):
            Database("sqlite+aiosqlite:///unused.db", heartbeat_s=bad)


async def spawn_bot(url: str, text: str, candidate: int) -> tuple[asyncio.subprocess.Process, list[int]]:
    """A bot process that began a post of `text` and a generation, claimed the due schedules and voted for
    `candidate`: (the process, [post, generation, process id, schedules claimed])."""
    bot = await asyncio.create_subprocess_exec(sys.executable, str(WRITER), url, "bot", text, str(BEAT), str(candidate),
                                               stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    line = (await asyncio.wait_for(bot.stdout.readline(), 120)).decode()
    if not line.startswith("begun "):
        bot.kill()
        raise AssertionError(f"the bot did not start: {line!r} {(await bot.stderr.read()).decode()}")
    return bot, [int(word) for word in line.split()[1:]]


async def settled(db: Database, post_id: int, within_s: float = 120.0):
    """The post once it is no longer pending (a bounded poll: the lease runs out after 3 heartbeats)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while (post := await db.get_post(post_id)).status == "pending":
        assert asyncio.get_running_loop().time() < deadline, f"post #{post_id} was never settled"
        await asyncio.sleep(0.1)
    return post


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
async def test_two_bot_processes_a_sigkilled_ones_post_becomes_unknown_once_its_lease_runs_out(url):
    bots = []
    reader = await started(url, recover=False)
    try:
        voted = await reader.finish_generation(await reader.record_generation("discord", channel_id="c1"), ["a"])
        await reader.set_schedule("discord", "c1", time_of_day="09:00", at=datetime.now(UTC) - timedelta(days=2))
        first, (post1, gen1, owner1, claimed1) = await spawn_bot(url, "the first bot's post", voted.candidates[0].id)
        bots.append(first)
        second, (post2, gen2, owner2, claimed2) = await spawn_bot(url, "the second bot's post", voted.candidates[0].id)
        bots.append(second)
        assert owner1 != owner2
        assert claimed1 + claimed2 == 1     # the due schedule runs once
        assert [row.votes for row in await reader.tally(voted.id)] == [1]   # the same vote is counted once
        # the second bot's start left the first one's post in flight alone
        assert [(await reader.get_post(p)).status for p in (post1, post2)] == ["pending", "pending"]
        first.kill()
        await first.wait()
        post = await settled(reader, post1)
        assert post.status == "unknown" and "check the platform by hand" in post.last_error
        assert (await reader.get_generation(gen1)).status == "failed"
        assert second.returncode is None
        assert (await reader.get_post(post2)).status == "pending"
        assert (await reader.get_generation(gen2)).status == "pending"
    finally:
        for bot in bots:
            if bot.returncode is None:
                bot.kill()
            await bot.wait()
        await reader.close()


# -- two `proverbot run` ---------------------------------------------------------------------------------------

def proverbot_run(fake: FakeX, trained_run: Path, database: Path) -> tuple[subprocess.Popen, queue.Queue]:
    """`proverbot run` with its console on a pipe, posting to the fake X, beating every BEAT s: (it, its lines)."""
    env = {**run_env(trained_run, database), **ENV, "PYTHONPATH": str(ROOT), "PROVERBOT_HEARTBEAT_S": str(BEAT),
           "PROVERBOT_PUBLISH_TIMEOUT": "600"}
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.proverbot_with_fake_x", fake.url.rsplit(":", 1)[1],
                                "run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=database.parent, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    return process, lines


def wait_for(process: subprocess.Popen, lines: queue.Queue, start: str, within_s: float = 120.0) -> str:
    """The first line of `process` that starts with `start`; AssertionError, with its errors, if none comes in time."""
    deadline = time.monotonic() + within_s
    try:
        while not (line := lines.get(timeout=max(deadline - time.monotonic(), 0.01))).startswith(start):
            pass
    except queue.Empty:
        if process.poll() is None:
            process.kill()
        raise AssertionError(f"no {start!r} line: {process.wait(30)=}, stderr: {process.stderr.read()}") from None
    return line


def query(database: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(database, timeout=30)) as log:
        return log.execute(sql).fetchall()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_two_proverbot_runs_a_post_in_flight_survives_the_other_start_and_is_unknown_after_a_sigkill(trained_run,
                                                                                                     tmp_path):
    database = tmp_path / "log.db"
    with FakeX(*KEYS.values()) as fake:
        fake.hold("POST /2/tweets", limit=600)     # X takes the post, and its answer waits (the test releases it)
        first, first_lines = proverbot_run(fake, trained_run, database)
        second = None
        try:
            wait_for(first, first_lines, "proverbot console:")
            first.stdin.write("/proverb count:2 length:20\n/vote 1\n/post\n")
            first.stdin.flush()
            assert fake.held.wait(120)
            second, second_lines = proverbot_run(fake, trained_run, database)
            wait_for(second, second_lines, "proverbot console:")
            pids = query(database, "SELECT pid FROM processes ORDER BY id")
            assert pids == [(first.pid,), (second.pid,)]
            [(post_id, status, owner)] = query(database, "SELECT id, status, owner_id FROM posts")
            assert status == "pending"      # the second bot's start left it alone

            first.kill()
            first.wait(30)
            deadline = time.monotonic() + 120
            while query(database, f"SELECT status FROM posts WHERE id = {post_id}") == [("pending",)]:
                assert time.monotonic() < deadline, "the killed bot's post was never settled"
                time.sleep(0.1)
            assert query(database, "SELECT status FROM posts") == [("unknown",)]
            assert query(database, "SELECT owner_id FROM generations") == [(owner,)]

            _, errors = second.communicate("/quit\n", timeout=60)
            assert second.returncode == 0 and "Traceback" not in errors, errors
            assert query(database, "SELECT pid FROM processes") == [(first.pid,)]  # a clean stop removes its row
            assert len(fake.received("POST /2/tweets")) == 1
        finally:
            fake.release.set()
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(30)
