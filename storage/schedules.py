"""Daily schedules, one per (platform, server, channel), claimed atomically so that one process runs each occurrence.

await db.set_schedule(platform, channel_id, time_of_day="HH:MM", timezone="Europe/Paris", window_minutes=60,
                      server_id="", enabled=True, publisher=None, set_by_id=None, set_by_name=None, at=None)
        -> ScheduleInfo
        creates or replaces the channel's schedule, computes its next run, writes an audit entry; publisher: where
        it posts (x, mastodon, ...; None: the default)
await db.get_schedule(platform, channel_id, server_id="") -> ScheduleInfo | None
await db.list_schedules(enabled_only=False) -> list[ScheduleInfo]
await db.disable_schedule(platform, channel_id, server_id="", by_id=None, by_name=None, at=None) -> bool
await db.claim_due_schedules(now=None, platforms=None) -> list[ScheduleRun]   (platforms: only those served here)
        every enabled schedule whose next_run_at has come, moved on by compare-and-set on next_run_at (two processes
        never both claim one occurrence). The next run is the first occurrence after `now`, so a bot that was down
        for days runs a missed schedule once, not once per missed day.
next_run_after(time_of_day, timezone, after) -> datetime   the first HH:MM in that zone strictly after `after`
"""

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update

from storage.db import DatabaseCore, aware, record
from storage.errors import ScheduleError
from storage.generations import clip
from storage.history import write_audit
from storage.models import Schedule
from storage.records import ScheduleInfo, ScheduleRun

HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_time_of_day(text: str) -> time:
    match = HHMM.match(text.strip())
    if not match:
        raise ScheduleError(f"Time of day {text!r} is not HH:MM on a 24-hour clock (e.g. 09:30 or 18:00).")
    return time(int(match[1]), int(match[2]))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Time zone {name!r} is unknown: use an IANA name such as Europe/Paris, "
                            "America/New_York or UTC.") from None


def next_run_after(time_of_day: str, timezone: str, after: datetime) -> datetime:
    """The first time_of_day in timezone strictly after `after`, in UTC. A time skipped by a DST change runs at the
    same offset as the hour before (an hour later on the wall clock); a repeated one runs the first time."""
    local_time, place = parse_time_of_day(time_of_day), zone(timezone)
    after = aware(after)
    day = after.astimezone(place).date()
    for offset in range(3):
        candidate = datetime.combine(day + timedelta(days=offset), local_time, tzinfo=place).astimezone(UTC)
        if candidate > after:
            return candidate
    raise AssertionError("unreachable: an occurrence within three days")


class SchedulesAPI(DatabaseCore):
    async def set_schedule(self, platform: str, channel_id: str, *, time_of_day: str, timezone: str = "UTC",
                           window_minutes: int = 60, server_id: str = "", enabled: bool = True,
                           publisher: str | None = None, set_by_id: str | None = None, set_by_name: str | None = None,
                           at: datetime | None = None) -> ScheduleInfo:
        at = aware(at)
        time_of_day = parse_time_of_day(time_of_day).strftime("%H:%M")
        zone(timezone)
        if not 1 <= window_minutes <= 24 * 60:
            raise ScheduleError(f"The voting window must be between 1 and 1440 minutes, not {window_minutes}.")
        next_run = next_run_after(time_of_day, timezone, at) if enabled else None
        async with self._write() as session:
            row = await session.scalar(self._where(select(Schedule), platform, channel_id, server_id))
            if row is None:
                row = Schedule(platform=platform, server_id=clip(server_id or "", 64), channel_id=clip(channel_id, 64),
                               created_at=at)
                session.add(row)
            row.time_of_day, row.timezone = time_of_day, timezone
            row.window_minutes, row.enabled = window_minutes, enabled
            row.next_run_at, row.updated_at, row.publisher = next_run, at, clip(publisher, 32)
            row.set_by_id, row.set_by_name = clip(set_by_id, 64), clip(set_by_name, 200)
            detail = f"{time_of_day} {timezone}, vote {window_minutes} min, {'enabled' if enabled else 'disabled'}"
            detail += f", posts to {publisher}" if publisher else ""
            write_audit(session, "schedule.set", set_by_id, set_by_name, self._target(platform, channel_id, server_id),
                        detail, at)
            await session.flush()
            return record(ScheduleInfo, row)

    @staticmethod
    def _where(query, platform: str, channel_id: str, server_id: str):
        return query.where(Schedule.platform == platform, Schedule.server_id == (server_id or ""),
                           Schedule.channel_id == str(channel_id))

    @staticmethod
    def _target(platform: str, channel_id: str, server_id: str) -> str:
        return "/".join(part for part in (platform, server_id, channel_id) if part)

    async def get_schedule(self, platform: str, channel_id: str, *, server_id: str = "") -> ScheduleInfo | None:
        async with self._read() as session:
            row = await session.scalar(self._where(select(Schedule), platform, channel_id, server_id))
            return None if row is None else record(ScheduleInfo, row)

    async def list_schedules(self, *, enabled_only: bool = False) -> list[ScheduleInfo]:
        query = select(Schedule).order_by(Schedule.platform, Schedule.server_id, Schedule.channel_id)
        if enabled_only:
            query = query.where(Schedule.enabled.is_(True))
        async with self._read() as session:
            return [record(ScheduleInfo, row) for row in await session.scalars(query)]

    async def disable_schedule(self, platform: str, channel_id: str, *, server_id: str = "", by_id: str | None = None,
                               by_name: str | None = None, at: datetime | None = None) -> bool:
        at = aware(at)
        async with self._write() as session:
            result = await session.execute(self._where(update(Schedule), platform, channel_id, server_id)
                                           .where(Schedule.enabled.is_(True))
                                           .values(enabled=False, next_run_at=None, updated_at=at))
            if result.rowcount:
                write_audit(session, "schedule.disable", by_id, by_name, self._target(platform, channel_id, server_id),
                            "", at)
            return result.rowcount == 1

    async def claim_due_schedules(self, now: datetime | None = None,
                                  platforms: Iterable[str] | None = None) -> list[ScheduleRun]:
        now = aware(now)
        query = select(Schedule).where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
        if platforms is not None:
            query = query.where(Schedule.platform.in_(list(platforms)))
        async with self._read() as session:
            due = [record(ScheduleInfo, row) for row in await session.scalars(query.order_by(Schedule.id))]
        claimed = []
        for schedule in due:
            following = next_run_after(schedule.time_of_day, schedule.timezone, now)
            async with self._write() as session:
                result = await session.execute(
                    update(Schedule).where(Schedule.id == schedule.id, Schedule.enabled.is_(True),
                                           Schedule.next_run_at == schedule.next_run_at)
                    .values(next_run_at=following, last_run_at=now))
            if result.rowcount == 1:
                moved = replace(schedule, next_run_at=following, last_run_at=now)
                claimed.append(ScheduleRun(moved, schedule.next_run_at))
        return claimed
