"""What the chat front ends share: reading a command's words, the permission error, and fitting text to a message.

    options = parse_options(["prefix:thou shalt", "count:3"], PROVERB_KEYS)     # {"prefix": ..., "count": "3"}
    candidate = await candidate_id(core, ctx, "#12")          # "N" (the latest batch here) or "#ID" (storage id)
    kwargs = schedule_options(["time:09:30", "window:10"])    # for core.set_schedule
    named, to = post_options(["2", "to:mastodon"])            # ("2", "mastodon") for core.post
    fit(text, 2000), pages(lines, 2000)                        # cut (with a visible mark) and packed into messages

The console, Discord and Slack read the same key:value words and candidate references and say the same errors.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from chatbot.core import BadRequest, Context, Core
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

PROVERB_KEYS = ("prefix", "temperature", "count", "length")
SCHEDULE_KEYS = ("time", "timezone", "window", "to")
SCHEDULE_USAGE = ("Use /schedule daily time:HH:MM [timezone:Europe/Paris] [window:10] [to:NAME], /schedule show or "
                  "/schedule off.")
TRIMMED = " … [trimmed]"
SHUTDOWN_GRACE = 8.0                # seconds commands in flight get to finish when the bot stops


class NotAllowed(ProverbotError):
    """The user may not post or set schedules here (a role, permission, user group or admin is needed)."""


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


def history_size(args: list[str]) -> str | int:
    """The n of `/history [n]`: how many posts to show (10 when not given; core.history checks the range)."""
    if len(args) > 1:
        raise BadRequest("/history takes at most one number: how many posts to show.")
    return args[0] if args else 10


async def candidate_id(core: Core, ctx: Context, text: str) -> int:
    """The storage id of the candidate `text` names: N, its number in the latest batch here, or #ID."""
    text = text.strip()
    if text.startswith("#") and text[1:].isdigit():
        return int(text[1:])
    if not text.isdigit():
        raise BadRequest(f"{text!r} is not a candidate number: give e.g. 1 (latest batch) or #12 (storage id).")
    return await core.candidate_number(ctx, int(text))


def fit(text: str, limit: int, dangling: str = "") -> str:
    """text cut to `limit` characters, with a visible mark when something was cut; `dangling` (a regular
    expression) matches what must not be left at the end of the cut, such as half an escape."""
    if len(text) <= limit:
        return text
    kept = text[:limit - len(TRIMMED)]
    return (re.sub(f"(?:{dangling})$", "", kept) if dangling else kept) + TRIMMED


def pages(lines: Iterable[str], limit: int, dangling: str = "") -> list[str]:
    """Lines packed into as few messages of `limit` characters as they fit (a line too long for one is cut)."""
    out: list[str] = []
    for line in lines:
        line = fit(line, limit, dangling)
        if out and len(out[-1]) + 1 + len(line) <= limit:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


async def finish_in_flight(tasks: set[asyncio.Task], grace: float = SHUTDOWN_GRACE) -> None:
    """Let the commands in flight answer (within `grace` seconds: Docker kills after 10), then cancel the rest:
    a cancelled /proverb is logged as failed, a cancelled /post as unknown (it may have gone out)."""
    if not tasks:
        return
    log.info("shutting down: waiting up to %g s for %d command(s) in flight", grace, len(tasks))
    _, late = await asyncio.wait(set(tasks), timeout=grace)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
