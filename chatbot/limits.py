"""Limits per member on /proverb: a cooldown per channel and a cap of candidates per hour, counted from the log.

    limits = Limits(cooldown=5, hourly=30)       # the settings user_cooldown and user_hourly_candidates
    await limits.check(db, ctx, count=5)         # TooSoon: "You asked here 2 s ago: try again in 3 s."

The count comes from the log's generations (failed ones left out), so every bot process sharing the log agrees,
and a restart forgets nothing. A refused request costs nothing: it is refused before any sampling, and nothing is
logged. Moderators are exempt: the front ends skip the check for them (chatbot.frontends.flows.ask), and the
scheduler's runs are not checked at all.
"""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chatbot.context import Context
from proverbot_errors import ProverbotError
from storage import Database

HOUR = timedelta(hours=1)


class TooSoon(ProverbotError):
    """A member's request past a limit; `wait` is how many seconds until it would be taken."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


def later(seconds: float) -> str:
    """'42 s', or '12 min' from two minutes on."""
    return f"{math.ceil(seconds)} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"


@dataclass(frozen=True)
class Limits:
    cooldown: float = 0.0       # seconds between two requests of a member in one channel (0: none)
    hourly: int = 0             # candidates a member may ask for in any hour, all channels together (0: no cap)

    async def check(self, db: Database, ctx: Context, count: int, now: datetime | None = None) -> None:
        """TooSoon when ctx's member may not ask for `count` candidates in ctx's channel now, saying when."""
        if not self.cooldown and not self.hourly:
            return
        now = now or datetime.now(UTC)
        asked = await db.requests_since(ctx.platform, ctx.user_id, now - max(HOUR, timedelta(seconds=self.cooldown)))
        here = [g.created_at for g in asked if g.channel_id == ctx.channel_id]
        if self.cooldown and here:
            wait = self.cooldown - (now - here[-1]).total_seconds()
            if wait > 0:
                raise TooSoon(f"You asked here {later(self.cooldown - wait)} ago; one request every "
                              f"{later(self.cooldown)}: try again in {later(wait)}.", wait)
        if self.hourly:
            self.check_hourly([(g.created_at, g.count or 0) for g in asked if g.created_at > now - HOUR], count, now)

    def check_hourly(self, asked: list[tuple[datetime, int]], count: int, now: datetime) -> None:
        """asked: (when, how many) of the member's requests in the last hour, oldest first."""
        used = sum(n for _, n in asked)
        if used + count <= self.hourly:
            return
        if count > self.hourly:
            raise TooSoon(f"count:{count} is more than the {self.hourly} candidates a member may ask for in an hour: "
                          "ask for fewer.", 0.0)
        for when, n in asked:           # the oldest requests leave the hour first
            used -= n
            if used + count <= self.hourly:
                wait = (when + HOUR - now).total_seconds()
                break
        left = max(0, self.hourly - sum(n for _, n in asked))
        fewer = f" (or ask for count:{left})" if left else ""
        raise TooSoon(f"You asked for {self.hourly - left} of your {self.hourly} candidates this hour: try again in "
                      f"{later(wait)}{fewer}.", wait)
