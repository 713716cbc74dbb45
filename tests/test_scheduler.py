"""Daily schedules: Core's schedule methods, the Scheduler under a fake clock (nothing sleeps for real), /schedule."""

import asyncio
import io
import os
import re
from datetime import UTC, datetime, timedelta

import pytest

from chatbot.context import Context
from chatbot.core import BadRequest, Core, Defaults
from chatbot.frontends.console import Console
from chatbot.frontends.flows import Channel
from chatbot.publishers.dryrun import DryRunPublisher
from chatbot.publishers.registry import Publishers
from chatbot.scheduler import BOT_ID, Scheduler
from model.worker import ModelWorker
from storage import Database
from tests.test_core import make_core as core_for_tests

START = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)     # a Monday, 08:00 UTC
ADA = Context("test", channel_id="c1", user_id="u1", user_name="ada")
BOB = Context("test", channel_id="c1", user_id="u2", user_name="bob")
CAT = Context("test", channel_id="c2", user_id="u3", user_name="cat")


class FakeClock:
    """now() is set by the test; sleep() waits until the test advances the clock past its end."""

    def __init__(self, now: datetime) -> None:
        self.current = now
        self.sleepers: list[tuple[datetime, asyncio.Future]] = []

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.current + timedelta(seconds=seconds), future))
        await future

    def advance(self, **delta) -> None:
        self.current += timedelta(**delta)
        for end, future in list(self.sleepers):
            if end <= self.current:
                self.sleepers.remove((end, future))
                if not future.done():
                    future.set_result(None)

    async def sleeping(self, n: int, timeout: float = 60) -> None:
        """Wait (really, polling every few ms) until n coroutines sleep on this clock."""
        async with asyncio.timeout(timeout):
            while len(self.sleepers) < n:
                await asyncio.sleep(0.005)


class Announcements:
    """A front end of platform "test" that keeps what the scheduler says in its channels (chatbot.scheduler.Frontend,
    chatbot.frontends.flows.Channel)."""

    platform = "test"

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []
        self.shown: list[tuple[str, int]] = []          # (channel, candidate id) of each candidate shown
        self.where: str | None = None

    def channel(self, ctx: Context) -> Channel:
        return Room(self, ctx)

    def texts(self, channel="c1") -> list[str]:
        return [text for where, text in self.said if where == channel]


class Room:
    hint, marks = "Vote.", ()

    def __init__(self, front: Announcements, ctx: Context) -> None:
        self.front, self.ctx = front, ctx

    def quote(self, text: str) -> str:
        return text

    def pages(self, lines) -> list[str]:
        return ["\n".join(lines)]

    async def send(self, text: str) -> None:
        candidate = re.match(r"\d+\. \[#(\d+)\] ", text)
        if candidate:
            self.front.shown.append((self.ctx.channel_id, int(candidate.group(1))))
        else:
            self.front.said.append((self.ctx.channel_id, text))

    async def mark(self, message_id: str, mark: str) -> None:
        raise AssertionError("no marks here")


async def open_db() -> Database:
    database = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await database.start()
    return database


def make_core(db, worker, sampler) -> Core:
    return core_for_tests(db, worker, sampler, defaults=Defaults(count=3, length=20, batch_size=8, temperature=1.0))


@pytest.fixture
def core(db, worker, sampler):
    return make_core(db, worker, sampler)


# --- Core ------------------------------------------------------------------------------------------------------

async def test_set_show_and_turn_off_a_schedule(core, db):
    schedule = await core.set_schedule(ADA, "09:30", "Europe/Paris", window_minutes=15, at=START)
    assert (schedule.time_of_day, schedule.timezone, schedule.window_minutes) == ("09:30", "Europe/Paris", 15)
    assert schedule.next_run_at == datetime(2030, 1, 7, 8, 30, tzinfo=UTC)    # 09:30 in Paris in winter
    assert (await core.schedule(ADA)).id == schedule.id
    assert await core.schedule(CAT) is None
    assert await core.schedule_off(ADA) is True
    assert await core.schedule_off(ADA) is False
    assert not (await core.schedule(ADA)).enabled
    actions = [entry.action for entry in await db.history("audit")]
    assert "schedule.set" in actions and "schedule.disable" in actions


@pytest.mark.parametrize("time, zone, window, message", [
    ("9:30", "UTC", 10, "Time of day '9:30' is not HH:MM"),
    ("24:00", "UTC", 10, "Time of day '24:00' is not HH:MM"),
    ("noon", "UTC", 10, "Time of day 'noon' is not HH:MM"),
    ("09:30", "Mars/Olympus", 10, "Time zone 'Mars/Olympus' is unknown"),
    ("09:30", "UTC", 0, "window must be a whole number from 1 to 1440 (got 0)"),
    ("09:30", "UTC", 1441, "window must be a whole number from 1 to 1440 (got 1441)"),
    ("09:30", "UTC", "ten", "window must be a number from 1 to 1440"),
])
async def test_bad_schedules_are_refused(core, db, time, zone, window, message):
    with pytest.raises(BadRequest, match=re.escape(message)):
        await core.set_schedule(ADA, time, zone, window_minutes=window)
    assert await db.list_schedules() == []


# --- Scheduler -------------------------------------------------------------------------------------------------

async def test_a_due_schedule_samples_waits_for_votes_and_posts_the_winner(core, db):
    clock, said = FakeClock(START), Announcements()
    scheduler = Scheduler(core, db, [said], clock)
    await core.set_schedule(ADA, "09:00", "UTC", window_minutes=10, at=START)
    assert await scheduler.run_due() == []                    # 08:00: not yet
    clock.advance(hours=1)
    tasks = await scheduler.run_due()
    assert len(tasks) == 1
    await clock.sleeping(1)                                   # the batch is out, the window open
    generation = await db.latest_generation("test", "c1")
    assert generation.user_id == BOT_ID
    usable = [c for c in generation.candidates if c.usable]
    note, = said.texts()
    assert note.startswith("Scheduled post: voting closes in 10 min; nobody votes: 1 is posted.\n[")
    assert f"generation #{generation.id}. Vote.]" in note
    assert said.shown == [("c1", c.id) for c in usable]
    if len(usable) < 2:
        pytest.skip("the tiny model gave fewer than two usable candidates")
    await core.vote(BOB, usable[1].id)                        # a vote during the window decides
    clock.advance(minutes=9)
    await asyncio.sleep(0.01)
    assert not tasks[0].done()                                # the window is still open
    clock.advance(minutes=1)
    await asyncio.gather(*tasks)
    posts = await db.history("posts")
    assert [(p.candidate_id, p.status) for p in posts] == [(usable[1].id, "posted")]
    assert said.texts()[-1].startswith(f"Scheduled post: Posted [#{usable[1].id}] on dryrun: https://")


async def test_nobody_voted_posts_the_first_usable_candidate(core, db):
    clock, said = FakeClock(START), Announcements()
    scheduler = Scheduler(core, db, [said], clock)
    await core.set_schedule(ADA, "08:30", window_minutes=1, at=START)
    clock.advance(minutes=30)
    tasks = await scheduler.run_due()
    await clock.sleeping(1)
    generation = await db.latest_generation("test", "c1")
    first = next(c for c in generation.candidates if c.usable)
    await core.ask(BOB)                                       # a user's batch in the window does not change the pick
    clock.advance(minutes=1)
    await asyncio.gather(*tasks)
    assert [p.candidate_id for p in await db.history("posts")] == [first.id]
    assert f"Posted [#{first.id}]" in said.texts()[-1]


async def test_a_missed_run_runs_once_and_schedules_do_not_block_each_other(core, db):
    clock, said = FakeClock(START), Announcements()
    scheduler = Scheduler(core, db, [said], clock)
    await core.set_schedule(ADA, "09:00", window_minutes=60, at=START)
    await core.set_schedule(CAT, "10:00", window_minutes=5, at=START)
    clock.advance(days=3)                                     # the bot was down for three days
    tasks = await scheduler.run_due()
    assert len(tasks) == 2
    assert await scheduler.run_due() == []                    # each missed schedule runs once
    await clock.sleeping(2)
    clock.advance(minutes=5)                                  # c2's window closes while c1's is open
    await asyncio.wait_for(asyncio.shield(tasks[1]), 30)
    assert not tasks[0].done()
    assert "Posted" in said.texts("c2")[-1]
    clock.advance(minutes=55)
    await asyncio.gather(*tasks)
    assert "Posted" in said.texts("c1")[-1]
    # claimed on the 10th at 08:00: the next run is that day's 09:00
    assert (await db.get_schedule("test", "c1")).next_run_at == datetime(2030, 1, 10, 9, 0, tzinfo=UTC)


async def test_two_schedulers_on_one_database_run_a_schedule_once(core, db, worker, sampler):
    other_db = await open_db()                                # a second process's connection to the same file
    try:
        clock, said = FakeClock(START), Announcements()
        first = Scheduler(core, db, [said], clock)
        second = Scheduler(make_core(other_db, worker, sampler), other_db, [said], clock)
        await core.set_schedule(ADA, "09:00", window_minutes=1, at=START)
        clock.advance(hours=1)
        claimed = await asyncio.gather(first.run_due(), second.run_due(), first.run_due(), second.run_due())
        tasks = [task for batch in claimed for task in batch]
        assert len(tasks) == 1
        await clock.sleeping(1)
        clock.advance(minutes=1)
        await asyncio.gather(*tasks)
        assert len(await db.history("posts")) == 1
        assert len(await db.history("generations")) == 1
    finally:
        await other_db.close()


class BrokenCore:
    async def ask(self, ctx, **options):
        raise RuntimeError("model went away")


async def test_failures_are_announced_and_the_loop_goes_on(db):
    clock, said = FakeClock(START), Announcements()
    scheduler = Scheduler(BrokenCore(), db, [said], clock)
    await db.set_schedule("test", "c1", time_of_day="09:00", window_minutes=1, at=START)
    loop = asyncio.create_task(scheduler.run_forever(poll_seconds=30))
    try:
        await clock.sleeping(1)                               # polled once: nothing due
        clock.advance(hours=1)
        async with asyncio.timeout(30):
            while not said.said:
                await asyncio.sleep(0.005)
        assert said.texts() == ["Scheduled post failed: unexpected RuntimeError (the bot's log has the details)."]
        await clock.sleeping(1)
        assert not loop.done()
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


# --- console ---------------------------------------------------------------------------------------------------

async def console(sampler, lines: str) -> list[str]:
    """What a console session printed after its first line, for these lines typed in it."""
    db = await open_db()
    out = io.StringIO()
    try:
        async with ModelWorker(lambda: sampler) as worker:
            await Console(make_core(db, worker, sampler), io.StringIO(lines), out, user="ada").run()
    finally:
        await db.close()
    return out.getvalue().splitlines()[1:]


async def test_schedule_in_the_console(sampler):
    said = await console(sampler, "/schedule show\n/schedule daily time:09:30 timezone:Europe/Paris window:10\n"
                                  "/schedule show\n/schedule daily time:25:00\n/schedule daily timezone:UTC\n"
                                  "/schedule daily time:09:30 window:0\n/schedule weekly\n/schedule off\n"
                                  "/schedule off\n/schedule show\n")
    assert said[0] == "No schedule here."
    assert re.fullmatch(r"Daily at 09:30 Europe/Paris, voting open 10 min; next run \d{4}-\d\d-\d\d \d\d:30 UTC\.",
                        said[1])
    assert said[2] == said[1]
    assert said[3].startswith("Sorry: Time of day '25:00' is not HH:MM")
    assert said[4].startswith("Sorry: /schedule daily needs time:HH:MM")
    assert said[5] == "Sorry: window must be a whole number from 1 to 1440 (got 0)."
    assert said[6].startswith("Sorry: Use /schedule daily time:HH:MM")
    assert said[7:] == ["Schedule off.", "There was no schedule on here.",
                        "Schedule off (was daily at 09:30 Europe/Paris)."]


async def test_the_console_schedule_outlives_its_session_and_runs_in_the_next(sampler, db, worker):
    """Set in one console session, shown and run in a later one (another channel): its batch is that session's,
    so /vote N works on it there."""
    first = await console(sampler, "/schedule daily time:09:00 window:1\n")
    assert first[0].startswith("Daily at 09:00 UTC, voting open 1 min; next run")
    out = io.StringIO()
    later = Console(make_core(db, worker, sampler), io.StringIO("/schedule show\n/vote 1\n"), out, user="bob")
    schedule = await db.get_schedule("console", "terminal")
    clock = FakeClock(schedule.next_run_at)
    tasks = await Scheduler(later.core, db, [later], clock).run_due()
    await clock.sleeping(1)
    session = later.terminal.ctx.channel_id
    generation = await db.latest_generation("console", session)
    if not [c for c in generation.candidates if c.usable]:
        pytest.skip("the tiny model gave no usable candidate")
    await later.run()
    clock.advance(minutes=1)
    await asyncio.gather(*tasks)
    said = out.getvalue()
    first_id = next(c.id for c in generation.candidates if c.usable)
    assert said.startswith("Scheduled post: voting closes in 1 min; nobody votes: 1 is posted.\n[")
    assert f"\n1. [#{first_id}] " in said
    assert re.search(r"^Daily at 09:00 UTC, voting open 1 min; next run", said, re.MULTILINE)
    assert f"\nVoted for 1 [#{first_id}].\n" in said
    assert re.search(rf"^Scheduled post: Posted \[#{first_id}\] on dryrun: ", said, re.MULTILINE)


async def test_schedules_of_platforms_not_served_here_are_left_alone(core, db):
    clock, said = FakeClock(START), Announcements()
    await db.set_schedule("slack", "c9", time_of_day="09:00", window_minutes=1, at=START)
    clock.advance(hours=1)
    assert await Scheduler(core, db, [said], clock).run_due() == []
    assert (await db.get_schedule("slack", "c9")).last_run_at is None      # still due for the process serving Slack


class Mastodon(DryRunPublisher):
    name = "mastodon"


async def test_a_schedule_posts_on_its_own_publisher(db, worker, sampler):
    core = core_for_tests(db, worker, sampler, publisher=Publishers([DryRunPublisher(), Mastodon()]),
                          defaults=Defaults(count=3, length=20, batch_size=8, temperature=1.0))
    clock, said = FakeClock(START), Announcements()
    await core.set_schedule(ADA, "09:00", window_minutes=1, at=START, publisher="mastodon")
    clock.advance(hours=1)
    tasks = await Scheduler(core, db, [said], clock).run_due()
    await clock.sleeping(1)
    clock.advance(minutes=1)
    await asyncio.gather(*tasks)
    assert [post.platform for post in await db.history("posts")] == ["mastodon"]
