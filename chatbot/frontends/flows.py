"""Each chat command, written once for every front end: read, check, acknowledge, run on the core, answer.

    channel = reply = Terminal(ctx, sys.stdout)          # the console's (chatbot/frontends/console.py), for example
    await ask(core, channel, reply, prefix="thou shalt", count=3)      # what /proverb does everywhere
    await command(core, channel, reply, "/post", ["2", "to:mastodon"])  # a command typed as text
    await failed(reply, err, "/post")                                    # "Sorry: ...", one line, to the sender

A front end only translates: its events into these calls, and two small objects into its platform's calls. A
`Channel` is where batches are shown and votes counted, as one user (or the scheduler) acts in it; a `Reply` is
how one command is answered. Bad input is refused before the command is acknowledged, so that Discord and Slack
can refuse it privately; every error becomes one line to the sender (`failed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from chatbot import replies
from chatbot.context import Context
from chatbot.core import AskResult, BadRequest, Core, check_blocked_word
from chatbot.frontends.common import (
    MODEL_USAGE,
    PROVERB_KEYS,
    SCHEDULE_USAGE,
    candidate_id,
    history_size,
    no_arguments,
    one_candidate,
    one_post,
    parse_options,
    post_number,
    post_options,
    schedule_options,
)
from chatbot.limits import TooSoon
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

BLOCKLIST_USAGE = "Use /blocklist add WORD, /blocklist remove WORD or /blocklist show."


class Channel(Protocol):
    """A chat channel (the terminal, for the console) as `ctx` acts in it: ctx names the platform, the channel and
    the user (the bot itself for a scheduled run)."""

    ctx: Context
    hint: str                       # how to vote here, e.g. "React with 👍 to vote; /post posts the top-voted."
    marks: tuple[str, ...]          # the reactions the bot adds under each candidate: the votes (none in a terminal)

    def quote(self, text: str) -> str:
        """Generated or user-given text made safe to show here."""

    def pages(self, lines: Iterable[str]) -> list[str]:
        """Lines packed into as few messages as this platform's limit allows."""

    async def send(self, text: str) -> str | None:
        """A message in the channel (cut to the limit); its id, where reactions on it can be votes."""

    async def mark(self, message_id: str, mark: str) -> None:
        """Add one of `marks` to a message the bot sent."""


class Reply(Protocol):
    """How one command is answered: only to its sender (private), or to the channel."""

    async def accept(self, slow: bool = False, text: str = "", posting: bool = False) -> None:
        """Acknowledge the command, once its input is read (Discord and Slack want that within 3 seconds). slow:
        the answer takes a while (Discord shows "thinking…"); text: a private word meanwhile; posting: the sender
        must be allowed to post and set schedules (NotAllowed otherwise)."""

    async def answer(self, lines: list[str], private: bool = True) -> None:
        """Lines to the sender (private) or to the channel, in as many messages as the limit needs."""

    async def may_post(self) -> bool:
        """Whether the sender may post, set schedules and moderate (accept(posting=True) would let them): the
        moderators, exempt from the limits per member."""


# --- the commands ----------------------------------------------------------------------------------------------

async def ask(core: Core, channel: Channel, reply: Reply, prefix: str = "", temperature=None, count=None,
              length=None, run: str | None = None) -> None:
    """/proverb: sample a batch in the model worker (from `run`, else this channel's), then show it to vote on."""
    request = core.request(prefix, temperature, count, length)   # a bad value is refused before accepting
    await within_limits(core, channel, reply, request.count)
    if run is not None:
        run = core.check_run(run)
    await reply.accept(slow=True, text="Sampling…")
    notices: list[asyncio.Task] = []

    def queued(position: int) -> None:
        notices.append(asyncio.create_task(reply.answer([replies.queued(position)])))

    result = await core.ask(channel.ctx, prefix, temperature, count, length, on_queued=queued, run=run)
    await asyncio.gather(*notices, return_exceptions=True)   # a queue notice never lands after the answer
    header = replies.header(channel.ctx.user_name, prefix, result, channel.hint, channel.quote)
    await reply.answer([header], private=False)
    await show(core, channel, result)


async def within_limits(core: Core, channel: Channel, reply: Reply, count: int) -> None:
    """TooSoon (privately, before accepting: nothing sampled or logged) when the sender asked too soon or too much
    (chatbot/limits.py); moderators are exempt, and asked whether they are only when the limit would refuse."""
    try:
        await core.check_limits(channel.ctx, count)
    except TooSoon:
        if not await reply.may_post():
            raise


async def show(core: Core, channel: Channel, result: AskResult) -> None:
    """One message per candidate, remembered in the log (reactions on it are votes), with the vote marks added."""
    for candidate in result.candidates:
        message_id = await channel.send(replies.candidate(candidate, channel.quote))
        if message_id is None:
            continue
        await core.shown_in(candidate.id, message_id)
        for mark in channel.marks:
            try:
                await channel.mark(message_id, mark)
            except Exception as err:  # noqa: BLE001 (a missing reaction is no reason to stop showing the batch)
                log.warning("could not add %s to message %s: %s", mark, message_id, err)


async def announce(channel: Channel, text: str) -> None:
    """text in the channel, in as many messages as it needs."""
    for page in channel.pages(text.split("\n")):
        await channel.send(page)


async def vote(core: Core, channel: Channel, reply: Reply, named: str, added: bool = True) -> None:
    """/vote N or /unvote N (N: a number in the latest batch here, or #ID)."""
    chosen = await candidate_id(core, channel.ctx, named)
    await reply.accept()
    changed = await core.vote(channel.ctx, chosen, added=added)
    await reply.answer([replies.voted(named.strip(), chosen, added, changed)])


async def votes(core: Core, channel: Channel, reply: Reply) -> None:
    await reply.accept()
    await reply.answer(replies.tally(await core.votes(channel.ctx), channel.quote))


async def post(core: Core, channel: Channel, reply: Reply, named: str | None = None, to: str | None = None) -> None:
    """/post [N|#ID] [to:NAME]: the top-voted candidate of the latest batch here, or the one named."""
    chosen = await candidate_id(core, channel.ctx, named) if named else None
    if to is not None:
        core.publishers.get(to)                              # an unknown one is refused before accepting
    await reply.accept(slow=True, posting=True)
    posted = await core.post(channel.ctx, chosen, to=to)
    await reply.answer([replies.posted(posted, channel.quote)], private=False)


async def unpost(core: Core, channel: Channel, reply: Reply, named: str) -> None:
    """/unpost #ID: delete a published post on its platform and mark it withdrawn (for those who may post)."""
    number = post_number(named)
    await reply.accept(slow=True, posting=True)
    withdrawn = await core.unpost(channel.ctx, number)
    await reply.answer([replies.unposted(withdrawn, channel.quote)], private=False)


async def history(core: Core, channel: Channel, reply: Reply, n: int | str = 10) -> None:
    await reply.accept()
    await reply.answer(replies.history(await core.history(channel.ctx, n), channel.quote))


async def status(core: Core, channel: Channel, reply: Reply) -> None:
    """The model, the queue, posts against quotas, and this channel's schedule."""
    await reply.accept()
    await reply.answer([replies.status(await core.status()), replies.schedule(await core.schedule(channel.ctx))])


async def model_list(core: Core, channel: Channel, reply: Reply) -> None:
    """/model list: the runs, with this channel's and the loaded ones marked."""
    listed = await core.list_runs(channel.ctx)
    await reply.accept()
    await reply.answer(replies.runs(listed, channel.quote))


async def model_use(core: Core, channel: Channel, reply: Reply, name: str) -> None:
    """/model use NAME: this channel's run from now on (for those who may post)."""
    name = core.check_run(name)
    await reply.accept(posting=True)
    await reply.answer([replies.run_used(await core.use_run(channel.ctx, name), channel.quote)], private=False)


async def model_reload(core: Core, channel: Channel, reply: Reply, name: str | None = None) -> None:
    """/model reload [NAME]: load the run's checkpoint now (default: this channel's run; for those who may post)."""
    if name is not None:
        name = core.check_run(name)
    core.pool()
    await reply.accept(slow=True, posting=True)
    await reply.answer([replies.reloaded(*await core.reload_run(channel.ctx, name), channel.quote)])


async def schedule_daily(core: Core, channel: Channel, reply: Reply, **kwargs) -> None:
    """/schedule daily: kwargs as core.set_schedule takes them (time, timezone, window_minutes, publisher)."""
    await reply.accept(posting=True)
    await reply.answer([replies.schedule(await core.set_schedule(channel.ctx, **kwargs))], private=False)


async def schedule_show(core: Core, channel: Channel, reply: Reply) -> None:
    await reply.accept()
    await reply.answer([replies.schedule(await core.schedule(channel.ctx))])


async def schedule_off(core: Core, channel: Channel, reply: Reply) -> None:
    await reply.accept(posting=True)
    await reply.answer([replies.schedule_off(await core.schedule_off(channel.ctx))], private=False)


async def veto(core: Core, channel: Channel, reply: Reply, named: str) -> None:
    """/veto N|#ID: the candidate can never be posted (by /post, the votes or the schedule) and its votes stop
    counting; final, and said in the channel (for those who may post)."""
    chosen = await candidate_id(core, channel.ctx, named)
    await reply.accept(posting=True)
    vetoed = await core.veto(channel.ctx, chosen)
    await reply.answer([replies.vetoed(named.strip(), vetoed, channel.ctx.user_name, channel.quote)], private=False)


async def blocklist_add(core: Core, channel: Channel, reply: Reply, word: str) -> None:
    """/blocklist add WORD: candidates holding it are dropped from the next request on (for those who may post).
    Answered privately: a blocked word is not repeated in the channel."""
    word = check_blocked_word(word)
    await reply.accept(posting=True)
    word, added = await core.block(channel.ctx, word)
    await reply.answer([replies.blocked(word, added, channel.quote)])


async def blocklist_remove(core: Core, channel: Channel, reply: Reply, word: str) -> None:
    word = check_blocked_word(word)
    await reply.accept(posting=True)
    await reply.answer([replies.unblocked(word, await core.unblock(channel.ctx, word), channel.quote)])


async def blocklist_show(core: Core, channel: Channel, reply: Reply) -> None:
    """/blocklist show: the log's blocked words, privately, to those who may post."""
    await reply.accept(posting=True)
    await reply.answer(replies.blocklist(await core.blocklist(), channel.quote))


# --- commands typed as text (a console line, a Slack slash command) ---------------------------------------------

async def command(core: Core, channel: Channel, reply: Reply, name: str, args: list[str]) -> None:
    """Command `name` (e.g. "/post") with its words read into the flow's arguments; BadRequest for bad words."""
    if name == "/proverb":
        await ask(core, channel, reply, **parse_options(args, PROVERB_KEYS))
    elif name in ("/vote", "/unvote"):
        await vote(core, channel, reply, one_candidate(args), added=name == "/vote")
    elif name == "/post":
        await post(core, channel, reply, *post_options(args))
    elif name == "/history":
        await history(core, channel, reply, history_size(args))
    elif name == "/unpost":
        await unpost(core, channel, reply, one_post(args))
    elif name == "/schedule":
        await schedule(core, channel, reply, args)
    elif name == "/model":
        await model(core, channel, reply, args)
    elif name == "/veto":
        await veto(core, channel, reply, one_candidate(args, name))
    elif name == "/blocklist":
        await blocklist(core, channel, reply, args)
    elif name in ("/votes", "/status", "/proverb-status"):       # /proverb-status: Slack has a /status of its own
        no_arguments(args, name)
        await (votes if name == "/votes" else status)(core, channel, reply)
    else:
        raise BadRequest(f"Unknown command {name!r}; /help lists the commands.")


async def model(core: Core, channel: Channel, reply: Reply, args: list[str]) -> None:
    action, *rest = args or [""]
    action = action.lower()
    if action == "list" and not rest:
        await model_list(core, channel, reply)
    elif action == "use" and len(rest) == 1:
        await model_use(core, channel, reply, rest[0])
    elif action == "reload" and len(rest) <= 1:
        await model_reload(core, channel, reply, *rest)
    else:
        raise BadRequest(MODEL_USAGE)


async def blocklist(core: Core, channel: Channel, reply: Reply, args: list[str]) -> None:
    """/blocklist add WORD, /blocklist remove WORD (the rest of the words: a phrase), /blocklist show."""
    action, *rest = args or [""]
    action = action.lower()
    if action in ("add", "remove"):
        await (blocklist_add if action == "add" else blocklist_remove)(core, channel, reply, " ".join(rest))
    elif action == "show":
        no_arguments(rest, "/blocklist show")
        await blocklist_show(core, channel, reply)
    else:
        raise BadRequest(BLOCKLIST_USAGE)


async def schedule(core: Core, channel: Channel, reply: Reply, args: list[str]) -> None:
    action, *rest = args or [""]
    action = action.lower()
    if action == "daily":
        await schedule_daily(core, channel, reply, **schedule_options(rest))
    elif action in ("show", "off"):
        no_arguments(rest, f"/schedule {action}")
        await (schedule_show if action == "show" else schedule_off)(core, channel, reply)
    else:
        raise BadRequest(SCHEDULE_USAGE)


async def failed(reply: Reply, err: Exception, what: str) -> None:
    """Tell the sender in one line why a command failed; an error nobody can act on (a bug) is logged in full."""
    if not isinstance(err, ProverbotError):
        log.error("%s failed", what, exc_info=err)
    await reply.answer([replies.sorry(err)])
