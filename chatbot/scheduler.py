"""Daily scheduled posts: at a channel's time, sample a batch there, let people vote for the window, post the winner.

    scheduler = Scheduler(core, db, [console, discord_bot])    # the front ends serving their platforms' channels
    task = asyncio.create_task(scheduler.run_forever())

A scheduled batch is sampled as any request in its channel: from the channel's run (/model use), else the default.
Each occurrence is claimed in storage by compare-and-set (claim_due_schedules), so several bot processes on one
database run it once, and a bot that was down for days runs a missed schedule once. Every run is its own task:
one channel's voting window never holds up another's. Failures are announced in the channel and logged; they never
end the loop. The clock is injectable (now() and async sleep()) so tests never wait for real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

from chatbot import replies
from chatbot.context import Context
from chatbot.core import Core
from chatbot.frontends.flows import Channel, announce, show
from proverbot_errors import ProverbotError
from storage import Database, ScheduleRun

log = logging.getLogger(__name__)

BOT_ID = "proverbot"
BOT_NAME = "proverbot (schedule)"


class Frontend(Protocol):
    """What the scheduler needs of a front end: to speak in one of its channels."""

    platform: str       # the schedules it serves: those set on this platform

    def channel(self, ctx: Context) -> Channel:
        """The channel of a schedule, as the bot acts in it (the console: this session)."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Scheduler:
    def __init__(self, core: Core, db: Database, frontends: Iterable[Frontend], clock=None) -> None:
        self.core, self.db = core, db
        self.frontends = {frontend.platform: frontend for frontend in frontends}
        self.clock = clock or SystemClock()
        self.running: set[asyncio.Task] = set()

    async def run_due(self) -> list[asyncio.Task]:
        """Claim the schedules due now and start one task per run; returns the tasks (already running)."""
        tasks = []
        for run in await self.db.claim_due_schedules(self.clock.now(), platforms=list(self.frontends)):
            task = asyncio.create_task(self.run_one(run), name=f"schedule-{run.schedule.id}")
            self.running.add(task)
            task.add_done_callback(self.running.discard)
            tasks.append(task)
        return tasks

    async def run_forever(self, poll_seconds: float = 30) -> None:
        """run_due every poll_seconds until cancelled; cancelling also cancels the runs in flight."""
        try:
            while True:
                try:
                    await self.run_due()
                except Exception:
                    log.exception("claiming due schedules failed; trying again in %ss", poll_seconds)
                await self.clock.sleep(poll_seconds)
        finally:
            for task in list(self.running):
                task.cancel()

    async def run_one(self, run: ScheduleRun) -> None:
        """One occurrence: ask, show the batch, wait the window, post the winner, announce it. Never raises (but
        cancellation)."""
        schedule = run.schedule
        channel = self.frontends[schedule.platform].channel(Context(
            schedule.platform, channel_id=schedule.channel_id, server_id=schedule.server_id or None, user_id=BOT_ID,
            user_name=BOT_NAME))
        try:
            asked = await self.core.ask(channel.ctx)
            if not asked.candidates:
                await self.say(channel, "Scheduled post: the model gave no usable candidate this time; nothing posted.")
                return
            window = schedule.window_minutes
            await announce(channel, f"Scheduled post: voting closes in {window} min; nobody votes: 1 is posted.\n"
                                    f"{replies.asked(asked, channel.hint)}")
            await show(self.core, channel, asked)
            await self.clock.sleep(window * 60)
            posted = await self.core.post(channel.ctx, await self.core.winner_of(asked.generation_id),
                                          to=schedule.publisher)
            await self.say(channel, f"Scheduled post: {replies.posted(posted, channel.quote)}")
        except Exception as err:            # (cancellation is no Exception: it goes through)
            if not isinstance(err, ProverbotError):
                log.error("scheduled run of schedule %s failed", schedule.id, exc_info=err)
            await self.say(channel, f"Scheduled post failed: {replies.error(err)}")

    async def say(self, channel: Channel, text: str) -> None:
        try:
            await announce(channel, text)
        except Exception:
            log.exception("announcing in %s/%s failed: %s", channel.ctx.platform, channel.ctx.channel_id, text)
