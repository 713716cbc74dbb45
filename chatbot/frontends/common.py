"""What the chat front ends share below the command flows: reading a command's words, naming a candidate, the
permission error, fitting text to a platform's messages, and the commands in flight at shutdown.

    words('/proverb prefix:"thou shalt" count:3')              # shell-like words; a command too long is refused
    options = parse_options(["prefix:thou shalt", "count:3"], PROVERB_KEYS)     # {"prefix": ..., "count": "3"}
    candidate = await candidate_id(core, ctx, "#12")          # "N" (the latest batch here) or "#ID" (shown here)
    kwargs = schedule_options(["time:09:30", "window:10"])    # for core.set_schedule
    named, to = post_options(["2", "to:mastodon"])            # ("2", "mastodon") for core.post
    post_number("#3")                                          # 3, for core.unpost (also "3" or "post:#3")
    messages = Messages(4000, dangling=r"&[a-z]{0,3}")         # a platform's limit (Slack's) and escapes
    messages.fit(text), messages.pages(lines)                  # cut (with a visible mark) and packed into messages
    task = in_flight.track(); await in_flight.finish()         # the commands in flight, let finish at shutdown

The console, Discord and Slack read the same key:value words and candidate references and say the same errors.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from chatbot.context import Context
from chatbot.core import BadRequest, Core
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

MAX_COMMAND = 1000                  # characters of a command read at most (a console line, a Slack command's text)
MAX_ID = 2**63 - 1                  # the largest id a database row can have
PROVERB_KEYS = ("prefix", "temperature", "count", "length", "run")
MODEL_USAGE = "Use /model list, /model use NAME or /model reload [NAME]."
SCHEDULE_KEYS = ("time", "timezone", "window", "to")
SCHEDULE_USAGE = ("Use /schedule daily time:HH:MM [timezone:Europe/Paris] [window:10] [to:NAME], /schedule show or "
                  "/schedule off.")
TRIMMED = " … [trimmed]"
SHUTDOWN_GRACE = 8.0                # seconds commands in flight get to finish when the bot stops
STRAIGHT_QUOTES = str.maketrans({"“": '"', "”": '"'})     # a client may type curly quotes around a prefix
DIGITS = re.compile(r"[0-9]+")


class NotAllowed(ProverbotError):
    """The user may not post or set schedules here (a role, permission, user group or admin is needed)."""


def check_length(size: int) -> None:
    """BadRequest for a command of `size` characters when that is more than is read (before any parsing)."""
    if size > MAX_COMMAND:
        raise BadRequest(f"That command is {size:,} characters long; at most {MAX_COMMAND:,} are read.")


def words(text: str) -> list[str]:
    """A command's text as shell-like words (curly quotes read as straight ones), or BadRequest."""
    check_length(len(text))
    try:
        return shlex.split(text.translate(STRAIGHT_QUOTES))
    except ValueError as err:       # an unclosed quote
        raise BadRequest(f"Cannot read that command: {err}.") from None


def parse_options(args: list[str], keys: tuple[str, ...]) -> dict[str, str]:
    """key:value words (quotes already removed by shlex) into a dict; unknown or repeated keys are refused."""
    options: dict[str, str] = {}
    for word in args:
        key, sep, value = word.partition(":")
        key = key.lower()
        if not sep or key not in keys:
            raise BadRequest(f"Cannot read {word!r}: use key:value with a key among {', '.join(keys)} "
                             '(e.g. prefix:"thou shalt").')
        if key in options:
            raise BadRequest(f"{key} is given twice.")
        options[key] = value
    return options


def no_arguments(args: list[str], command: str) -> None:
    if args:
        raise BadRequest(f"{command} takes no arguments.")


def schedule_options(args: list[str]) -> dict[str, str]:
    """The words after `/schedule daily` as core.set_schedule's arguments: time (required), timezone, window, to."""
    options = parse_options(args, SCHEDULE_KEYS)
    if "time" not in options:
        raise BadRequest("/schedule daily needs time:HH:MM, e.g. /schedule daily time:09:30 timezone:UTC.")
    kwargs = {"time": options["time"]}
    if "timezone" in options:
        kwargs["timezone"] = options["timezone"]
    if "window" in options:
        kwargs["window_minutes"] = options["window"]
    if "to" in options:
        kwargs["publisher"] = options["to"]
    return kwargs


def post_options(args: list[str]) -> tuple[str | None, str | None]:
    """The words after /post: the candidate they name, if any (N or #ID), and the publisher of `to:NAME`, if any."""
    named = [word for word in args if not word.lower().startswith("to:")]
    chosen = parse_options([word for word in args if word not in named], ("to",))
    if len(named) > 1:
        raise BadRequest("Give one candidate: its number in the latest batch, or #ID (and to:NAME for where).")
    return (named[0] if named else None), chosen.get("to")


def one_candidate(args: list[str], command: str = "/vote") -> str:
    """The word after /vote, /unvote or /veto: the one candidate it names."""
    if not args:
        raise BadRequest(f"Which candidate? Give its number in the latest batch, e.g. {command} 1.")
    if len(args) > 1:
        raise BadRequest("Give one candidate: its number in the latest batch, or #ID.")
    return args[0]


def one_post(args: list[str]) -> str:
    """The word after /unpost: the one post it names."""
    if len(args) != 1:
        raise BadRequest("Name one post by its number, e.g. /unpost #3 (/history lists them).")
    return args[0]


def post_number(text: str) -> int:
    """The post id `text` names: #ID or ID, as /history shows them (post:#ID too, as a command option)."""
    digits = text.strip().lower().removeprefix("post:").removeprefix("#")
    if not DIGITS.fullmatch(digits) or not 1 <= int(digits) <= MAX_ID:
        raise BadRequest(f"{text[:40]!r} is not a post number: give e.g. #3 (/history lists them).")
    return int(digits)


def history_size(args: list[str]) -> str | int:
    """The n of `/history [n]`: how many posts to show (10 when not given; core.history checks the range)."""
    if len(args) > 1:
        raise BadRequest("/history takes at most one number: how many posts to show.")
    return args[0] if args else 10


async def candidate_id(core: Core, ctx: Context, text: str) -> int:
    """The storage id of the candidate `text` names in ctx's channel: N, its number in the latest batch there, or
    #ID, a candidate of a batch shown there (never one of another channel's, or console's, batches)."""
    text = text.strip()
    digits = text.removeprefix("#")
    if not DIGITS.fullmatch(digits):
        raise BadRequest(f"{text!r} is not a candidate number: give e.g. 1 (latest batch) or #12 (storage id).")
    if digits == text:
        return await core.candidate_number(ctx, int(digits))
    number = int(digits)
    if not 1 <= number <= MAX_ID or await core.db.candidate_in_channel(ctx.platform, ctx.channel_id, number) is None:
        raise BadRequest(f"No such candidate here: #{digits} was not shown in this channel.")
    return number


def vote_hint(marks: Iterable[str]) -> str:
    """How to vote in a chat channel, e.g. "React with 👍 or 🔥 to vote; /post posts the top-voted."."""
    return f"React with {' or '.join(marks)} to vote; /post posts the top-voted."


@dataclass(frozen=True)
class Messages:
    """A platform's messages: at most `limit` characters each; `dangling` (a regular expression) matches what a cut
    text must not end in, such as half an escape."""

    limit: int
    dangling: str

    def fit(self, text: str, limit: int | None = None) -> str:
        """text cut to `limit` characters (default: a message's), with a visible mark when something was cut."""
        limit = self.limit if limit is None else limit
        if len(text) <= limit:
            return text
        return re.sub(f"(?:{self.dangling})$", "", text[:limit - len(TRIMMED)]) + TRIMMED

    def pages(self, lines: Iterable[str]) -> list[str]:
        """Lines packed into as few messages as they fit (a line too long for one is cut)."""
        out: list[str] = []
        for line in lines:
            line = self.fit(line)
            if out and len(out[-1]) + 1 + len(line) <= self.limit:
                out[-1] += "\n" + line
            else:
                out.append(line)
        return out


class InFlight:
    """The commands in flight (the tasks running them), so that a shutdown lets them answer first."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def track(self) -> asyncio.Task:
        """The current task (running a command), kept until it is done or forgotten."""
        task = asyncio.current_task()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def forget(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)

    async def finish(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Let the commands in flight answer (within `grace` seconds: Docker kills after 10), then cancel the rest:
        a cancelled /proverb is logged as failed, a cancelled /post as unknown (it may have gone out)."""
        if not self.tasks:
            return
        log.info("shutting down: waiting up to %g s for %d command(s) in flight", grace, len(self.tasks))
        _, late = await asyncio.wait(set(self.tasks), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
