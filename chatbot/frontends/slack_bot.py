"""The Slack front end: slash commands and reaction votes over the core, with slack-bolt (asyncio).

    bot = SlackBot(core, SlackOptions(post_users=("U0123ABCD",)), SlackTokens.from_settings(load_settings(), False))
    await bot.serve()           # Socket Mode (HTTP mode with SlackOptions(http=True)), until cancelled

Each command runs its flow (chatbot.frontends.flows) and is acknowledged at once (Slack wants an answer within 3
seconds): a parameter that cannot be read or is out of range is refused in the acknowledgement itself, which only
its sender sees; everything else is answered after it, privately or to the channel, through the command's
response_url. /proverb answers with a summary, then posts each candidate in a message of its own
(chat.postMessage) with the vote reactions added; reactions on those messages are votes (reaction_added /
reaction_removed events; bots, this one included, never count). /post, /unpost, /veto, /blocklist, /schedule daily
and /schedule off need a user or user group named in the settings, or a workspace admin: the moderators, exempt from
the limits per member (a refused /proverb is told in the private acknowledgement). A command's text is read up to
1,000 characters.
Nothing the bot sends can ping anyone or be formatted; the tokens, settings, text rules and the connection (Socket
Mode or HTTP) are in chatbot/frontends/slack_setup.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

from slack_bolt.kwargs_injection.async_args import AsyncArgs
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from chatbot.config import load_settings
from chatbot.context import Context
from chatbot.core import Core
from chatbot.frontends import flows
from chatbot.frontends.common import InFlight, NotAllowed, vote_hint
from chatbot.frontends.slack_setup import (
    MESSAGES,
    Connection,
    SlackOptions,
    SlackRefused,
    SlackTokens,
    check_may_post,
    make_app,
    message,
    message_id,
    quote,
    respond,
    words,
)
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

PLATFORM = "slack"
COMMANDS = ("/proverb", "/votes", "/post", "/unpost", "/history", "/proverb-status", "/schedule",  # slack/manifest.yml
            "/veto", "/blocklist", "/model")


def context(command: dict) -> Context:
    return Context(PLATFORM, channel_id=command["channel_id"], user_id=command["user_id"],
                   user_name=command.get("user_name"), server_id=command.get("team_id"))


class SlackChannel:
    """A Slack channel as flows.Channel: messages go out with chat.postMessage, formatting off."""

    def __init__(self, bot: SlackBot, ctx: Context) -> None:
        self.bot, self.ctx = bot, ctx
        self.hint, self.marks = bot.vote_hint, bot.options.vote_reactions
        self.quote, self.pages = quote, MESSAGES.pages

    async def send(self, text: str) -> str:
        sent = await self.bot.client.chat_postMessage(channel=self.ctx.channel_id, text=MESSAGES.fit(text),
                                                      mrkdwn=False)
        return message_id(self.ctx.channel_id, sent["ts"])

    async def mark(self, message_id: str, name: str) -> None:
        channel, _, ts = message_id.partition("/")
        await self.bot.client.reactions_add(channel=channel, timestamp=ts, name=name)


class SlackReply:
    """The answer to a slash command (flows.Reply): in its acknowledgement while there is none yet (only its sender
    sees that), then through its response_url, to the sender or to the channel."""

    def __init__(self, bot: SlackBot, args: AsyncArgs) -> None:
        self.bot, self.args = bot, args

    async def accept(self, slow: bool = False, text: str = "", posting: bool = False) -> None:
        await self.args.ack(message(text, private=True) if text else "")
        if posting:
            await check_may_post(self.bot.client, self.bot.options, self.args.command["user_id"])

    async def answer(self, lines: list[str], private: bool = True) -> None:
        if self.args.ack.response is None:
            await self.args.ack(message("\n".join(lines), private))
        else:
            await respond(self.args.command["response_url"], lines, private)

    async def may_post(self) -> bool:
        try:
            await check_may_post(self.bot.client, self.bot.options, self.args.command["user_id"])
        except NotAllowed:
            return False
        return True


class SlackBot:
    """The bolt app with the commands and vote listeners, its server (Socket Mode or HTTP) and what the scheduler
    needs (chatbot.scheduler.Frontend)."""

    platform = PLATFORM

    def __init__(self, core: Core, options: SlackOptions | None = None, tokens: SlackTokens | None = None, *,
                 process_before_response: bool = False) -> None:
        """process_before_response: answer each request only once its listener is done (tests: deterministic)."""
        self.core = core
        self.options = options or SlackOptions()
        self.tokens = tokens or SlackTokens.from_settings(load_settings(), self.options.http)
        self.app = make_app(self.tokens, process_before_response)
        self.client: AsyncWebClient = self.app.client
        for name in COMMANDS:
            self.app.command(name)(self.listener(self.command))
        self.app.event("reaction_added")(self.listener(partial(self.reacted, added=True)))
        self.app.event("reaction_removed")(self.listener(partial(self.reacted, added=False)))
        self.vote_hint = vote_hint(f":{name}:" for name in self.options.vote_reactions)
        self.people: dict[str, tuple[bool, str]] = {}           # user id → (a bot?, name), from users.info
        self.in_flight = InFlight()
        self.connection = Connection(self.app, self.tokens, self.options)

    async def command(self, args: AsyncArgs) -> None:
        """A slash command: its text read as words and run as that command's flow."""
        command = args.command
        await flows.command(self.core, SlackChannel(self, context(command)), SlackReply(self, args),
                            command["command"], words(command["text"]))

    # --- votes -----------------------------------------------------------------------------------------------

    async def reacted(self, args: AsyncArgs, added: bool) -> None:
        """A reaction added or removed: a vote when it is a vote reaction on a candidate's message, by a person
        (bolt drops the bot's own events; other bots are looked up)."""
        event = args.event
        item = event.get("item") or {}
        if item.get("type") != "message" or not self.is_vote(event.get("reaction", "")):
            return
        name = None
        if added:
            bot, name = await self.person(event["user"])
            if bot:
                return
        ctx = Context(PLATFORM, channel_id=item["channel"], user_id=event["user"], user_name=name,
                      server_id=args.context.team_id)
        await self.core.react(ctx, message_id(item["channel"], item["ts"]), event["reaction"], added)

    def is_vote(self, reaction: str) -> bool:
        return reaction.split("::")[0] in self.options.vote_reactions      # +1::skin-tone-2 is a +1

    async def person(self, user_id: str) -> tuple[bool, str]:
        """(a bot?, display name) of a user, looked up once (users.info)."""
        if user_id not in self.people:
            user = (await self.client.users_info(user=user_id))["user"]
            profile = user.get("profile") or {}
            name = profile.get("display_name") or user.get("real_name") or user.get("name") or user_id
            self.people[user_id] = (bool(user.get("is_bot")) or user_id == "USLACKBOT", name)
        return self.people[user_id]

    # --- answering -------------------------------------------------------------------------------------------

    def listener(self, handler: Callable[[AsyncArgs], Awaitable[None]]):
        """handler as a bolt listener: kept track of, so that a shutdown lets it finish; a command's error goes to
        its sender only (flows.failed), an event's to the log."""

        async def listener(args: AsyncArgs) -> None:
            task = self.in_flight.track()
            try:
                await handler(args)
            except Exception as err:
                if isinstance(err, SlackApiError):
                    log.warning("Slack refused a call: %s", err)
                    err = SlackRefused(err)
                if args.command is not None:
                    await flows.failed(SlackReply(self, args), err, args.command["command"])
                elif isinstance(err, ProverbotError):
                    log.warning("%s: %s", args.body.get("event", {}).get("type"), err)
                else:
                    log.error("%s failed", args.body.get("event", {}).get("type"), exc_info=err)
            finally:
                self.in_flight.forget(task)

        return listener

    async def serve(self) -> None:
        """Take Slack's requests (self.connection) until cancelled, then let the commands in flight answer."""
        try:
            await self.connection.serve()
        finally:
            await self.in_flight.finish()

    # --- chatbot.scheduler.Frontend --------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.connection.healthy()

    def channel(self, ctx: Context) -> SlackChannel:
        return SlackChannel(self, ctx)
