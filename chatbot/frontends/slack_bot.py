"""The Slack front end: slash commands and reaction votes over the core, with slack-bolt (asyncio).

    bot = SlackBot(core, SlackOptions(post_users=("U0123ABCD",)), SlackTokens.from_environment(http=False))
    await bot.serve()           # Socket Mode (HTTP mode with SlackOptions(http=True)), until cancelled

Every command is acknowledged at once (Slack wants an answer within 3 seconds): a parameter that cannot be read or
is out of range is refused in the acknowledgement itself, which only its sender sees; everything else is answered
after it, privately or to the channel through the command's response_url, or with chat.postMessage. /proverb posts
a summary and then each candidate in a message of its own with the vote reactions added; reactions on those
messages are votes (reaction_added / reaction_removed events; bots, this one included, never count). /post,
/schedule daily and /schedule off need a user or user group named in the settings, or a workspace admin.

Nothing the bot sends can ping anyone or be formatted: every message goes out with mrkdwn off, generated and
user-given text has &, < and > escaped (so no <!channel>, <!here>, <@U…> or <#C…>) and every @ defused, and a
message is cut to Slack's 4,000 characters with a visible mark.

Socket Mode (the default) needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN and no public URL. HTTP mode needs
SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET and takes Slack's requests on POST /slack/events: bolt refuses (401) a
request whose signature does not match or whose timestamp is more than 5 minutes away (a replay). The app is
created from slack/manifest.yml, which names exactly the scopes, events and commands used here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.kwargs_injection.async_args import AsyncArgs
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from chatbot import replies
from chatbot.config import ConfigError
from chatbot.context import Context
from chatbot.core import AskResult, BadRequest, Core
from chatbot.frontends import common
from chatbot.frontends.common import (
    PROVERB_KEYS,
    SCHEDULE_USAGE,
    SHUTDOWN_GRACE,
    NotAllowed,
    candidate_id,
    finish_in_flight,
    history_size,
    no_arguments,
    parse_options,
    post_options,
    schedule_options,
)
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

PLATFORM = "slack"
API_URL = "https://slack.com/api/"  # Slack's Web API
PATH = "/slack/events"              # where HTTP mode takes Slack's requests (commands and events)
LIMIT = 4000                        # characters in one message's text (Slack cuts longer ones)
DANGLING = r"&[a-z]{0,3}"           # a cut text must not end in half an escape (&amp; &lt; &gt;)
RESPONSES = 5                       # messages a command's response_url takes
REACTION = re.compile(r"[a-z0-9_+'\-]{1,100}")
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,}")
STRAIGHT_QUOTES = str.maketrans({"“": '"', "”": '"'})     # a client may type curly quotes around a prefix


@dataclass(frozen=True)
class SlackTokens:
    bot: str = field(repr=False)                            # SLACK_BOT_TOKEN, xoxb-...
    app: str | None = field(default=None, repr=False)       # SLACK_APP_TOKEN, xapp-...: Socket Mode
    signing_secret: str | None = field(default=None, repr=False)   # SLACK_SIGNING_SECRET: HTTP mode

    @classmethod
    def from_environment(cls, http: bool) -> SlackTokens:
        """The tokens the mode needs, from the environment; ProverbotError naming a missing one."""
        env = {name: os.environ.get(name, "").strip()
               for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")}
        needed = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET" if http else "SLACK_APP_TOKEN")
        missing = [name for name in needed if not env[name]]
        if missing:
            mode = "HTTP mode (slack_http)" if http else "Socket Mode"
            raise ProverbotError(f"Slack in {mode} needs {' and '.join(needed)}, and {' and '.join(missing)} "
                                 "is not set: see README, Slack.")
        return cls(env["SLACK_BOT_TOKEN"], env["SLACK_APP_TOKEN"] or None, env["SLACK_SIGNING_SECRET"] or None)


@dataclass(frozen=True)
class SlackOptions:
    post_users: tuple[str, ...] = ()                 # user ids that may /post and set schedules
    post_usergroups: tuple[str, ...] = ()            # ... as may the members of these user groups
    post_admins: bool = True                         # ... and workspace admins and owners
    vote_reactions: tuple[str, ...] = ("+1",)        # reaction names that count as votes
    http: bool = False                               # HTTP mode instead of Socket Mode
    port: int = 3000                                 # HTTP mode listens here (0: any free port)
    host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if not self.vote_reactions or not all(REACTION.fullmatch(name) for name in self.vote_reactions):
            raise ConfigError("slack_vote_reactions needs at least one reaction name, as Slack writes it without "
                              "the colons: e.g. +1, fire, heart.")
        if not all(USER_ID.fullmatch(user) for user in self.post_users):
            raise ConfigError("slack_post_users takes user ids such as U0123ABCD (a profile's ⋮ menu → Copy member "
                              "ID), not names.")
        if not all(USERGROUP_ID.fullmatch(group) for group in self.post_usergroups):
            raise ConfigError("slack_post_usergroups takes user group ids such as S0123ABCD, not handles.")

    @classmethod
    def from_settings(cls, settings) -> SlackOptions:
        return cls(tuple(settings.slack_post_users), tuple(settings.slack_post_usergroups), settings.slack_post_admins,
                   tuple(name.strip(":") for name in settings.slack_vote_reactions), settings.slack_http,
                   settings.slack_port)


def quote(text: str) -> str:
    """Generated or user-given text, shown as it is: &, < and > escaped (no <!channel>, <@U…> or <#C…> can form)
    and a zero-width space after every @ (no @here either). Formatting is off in every message the bot sends."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("@", "@\u200b")


def fit(text: str, limit: int = LIMIT) -> str:
    """text cut to `limit` characters, with a visible mark when something was cut."""
    return common.fit(text, limit, DANGLING)


def pages(lines: Iterable[str], limit: int = LIMIT) -> list[str]:
    """Lines packed into as few messages as fit Slack's limit (a line too long for one is trimmed)."""
    return common.pages(lines, limit, DANGLING)


def words(text: str) -> list[str]:
    """A command's text as shell-like words. Slack sends &, < and > escaped: they are read as themselves."""
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").translate(STRAIGHT_QUOTES)
    try:
        return shlex.split(text)
    except ValueError as err:       # an unclosed quote
        raise BadRequest(f"Cannot read {text!r}: {err}.") from None


def message(text: str, private: bool = False) -> dict:
    """A message for an acknowledgement or a response_url: cut to the limit, formatting off."""
    return {"response_type": "ephemeral" if private else "in_channel", "text": fit(text), "mrkdwn": False}


def message_id(channel: str, ts: str) -> str:
    """What the log remembers of a message: a ts is unique within its channel only."""
    return f"{channel}/{ts}"


def context(command: dict) -> Context:
    return Context(PLATFORM, channel_id=command["channel_id"], user_id=command["user_id"],
                   user_name=command.get("user_name"), server_id=command.get("team_id"))


def refused(err: SlackApiError) -> str:
    """What to tell a person when Slack refused a call."""
    error = err.response.get("error", "an error")
    if error in ("not_in_channel", "channel_not_found"):
        return f"Slack did not let me post here ({error}): invite me to this channel first (/invite @proverbot)."
    return f"Slack refused a call ({error})."


class SlackBot:
    """The bolt app with the commands and vote listeners, its server (Socket Mode or HTTP) and what the scheduler
    needs (chatbot.scheduler.Frontend)."""

    platform = PLATFORM

    def __init__(self, core: Core, options: SlackOptions | None = None, tokens: SlackTokens | None = None, *,
                 process_before_response: bool = False) -> None:
        """process_before_response: answer each request only once its listener is done (tests: deterministic)."""
        self.core = core
        self.options = options or SlackOptions()
        self.tokens = tokens or SlackTokens.from_environment(self.options.http)
        self.app = AsyncApp(token=self.tokens.bot, signing_secret=self.tokens.signing_secret or "", name="proverbot",
                            process_before_response=process_before_response)
        self.client: AsyncWebClient = self.app.client
        self.client.base_url = API_URL                              # Slack's (a test's fake)
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        self.commands = {"/proverb": self.proverb, "/votes": self.votes, "/post": self.post, "/history": self.history,
                         "/proverb-status": self.status, "/schedule": self.schedule}
        for name, handler in self.commands.items():
            self.app.command(name)(self.listener(handler))
        self.app.event("reaction_added")(self.listener(partial(self.reacted, added=True)))
        self.app.event("reaction_removed")(self.listener(partial(self.reacted, added=False)))
        reactions = " or ".join(f":{name}:" for name in self.options.vote_reactions)
        self.vote_hint = f"React with {reactions} to vote; /post posts the top-voted."
        self.people: dict[str, tuple[bool, str]] = {}           # user id → (a bot?, name), from users.info
        self.in_flight: set[asyncio.Task] = set()
        self.background: set[asyncio.Task] = set()
        self.socket: SocketModeClient | None = None             # Socket Mode, once connected
        self.server: web.AppRunner | None = None                # HTTP mode, once listening

    # --- sampling --------------------------------------------------------------------------------------------

    async def proverb(self, args: AsyncArgs) -> None:
        command = args.command
        options = parse_options(words(command["text"]), PROVERB_KEYS)
        self.core.request(**options)                # a bad value: refused in the acknowledgement, privately
        await args.ack(message("Sampling…", private=True))
        ctx = context(command)
        result = await self.core.ask(ctx, on_queued=partial(self.queued, command["response_url"]), **options)
        asker = quote(command.get("user_name") or "someone")
        asked = f"{asker} asked for “{quote(options['prefix'])}”" if options.get("prefix") else f"{asker} asked"
        await self.send(ctx.channel_id, f"{asked}: {replies.asked(result, self.vote_hint)}")
        await self.show(ctx.channel_id, result)

    def queued(self, response_url: str, position: int) -> None:
        self.spawn(self.respond(response_url, [f"Waiting for the model: #{position} in the queue."], private=True))

    async def show(self, channel: str, result: AskResult) -> None:
        """One message per candidate, remembered in the log, with the vote reactions added by the bot."""
        for candidate in result.candidates:
            ts = await self.send(channel, replies.candidate(candidate, quote))
            await self.core.shown_in(candidate.id, message_id(channel, ts))
            for name in self.options.vote_reactions:
                try:
                    await self.client.reactions_add(channel=channel, timestamp=ts, name=name)
                except SlackApiError as err:
                    log.warning("could not add :%s: to message %s: %s", name, ts, err.response.get("error"))

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

    async def votes(self, args: AsyncArgs) -> None:
        command = args.command
        no_arguments(words(command["text"]), "/votes")
        await args.ack()
        await self.respond(command["response_url"], replies.tally(await self.core.votes(context(command)), quote))

    # --- posting ---------------------------------------------------------------------------------------------

    async def post(self, args: AsyncArgs) -> None:
        command = args.command
        named, to = post_options(words(command["text"]))
        await args.ack()
        ctx = context(command)
        await self.check_may_post(ctx)
        chosen = await candidate_id(self.core, ctx, named) if named else None
        posted = await self.core.post(ctx, chosen, to=to)
        await self.respond(command["response_url"], [replies.posted(posted, quote)], private=False)

    async def check_may_post(self, ctx: Context) -> None:
        """NotAllowed unless the user is named in post_users, is a workspace admin or owner (when post_admins), or
        is in one of post_usergroups."""
        options = self.options
        if ctx.user_id in options.post_users:
            return
        if options.post_admins:
            user = (await self.client.users_info(user=ctx.user_id))["user"]
            if user.get("is_admin") or user.get("is_owner"):
                return
        for group in options.post_usergroups:
            if ctx.user_id in (await self.client.usergroups_users_list(usergroup=group))["users"]:
                return
        who = ((["workspace admins"] if options.post_admins else []) + (["the users in slack_post_users"]
               if options.post_users else []) + ([f"members of {', '.join(options.post_usergroups)}"]
                                                 if options.post_usergroups else []))
        raise NotAllowed(f"Posting and schedules are for {' or '.join(who)}." if who else
                         "Posting and schedules are off here: nobody is named in slack_post_users or "
                         "slack_post_usergroups, and slack_post_admins is false.")

    # --- history, status and schedules -----------------------------------------------------------------------

    async def history(self, args: AsyncArgs) -> None:
        command = args.command
        n = history_size(words(command["text"]))
        await args.ack()
        await self.respond(command["response_url"],
                           replies.history(await self.core.history(context(command), n), quote))

    async def status(self, args: AsyncArgs) -> None:
        command = args.command
        no_arguments(words(command["text"]), "/proverb-status")
        await args.ack()
        ctx = context(command)
        await self.respond(command["response_url"], [replies.status(await self.core.status()),
                                                     replies.schedule(await self.core.schedule(ctx))])

    async def schedule(self, args: AsyncArgs) -> None:
        command = args.command
        action, *rest = words(command["text"]) or [""]
        action = action.lower()
        if action == "daily":
            kwargs = schedule_options(rest)
        elif action in ("show", "off"):
            no_arguments(rest, f"/schedule {action}")
        else:
            raise BadRequest(SCHEDULE_USAGE)
        await args.ack()
        ctx, url = context(command), command["response_url"]
        if action == "show":
            await self.respond(url, [replies.schedule(await self.core.schedule(ctx))])
            return
        await self.check_may_post(ctx)
        if action == "daily":
            await self.respond(url, [replies.schedule(await self.core.set_schedule(ctx, **kwargs))], private=False)
        else:
            done = await self.core.schedule_off(ctx)
            await self.respond(url, ["Schedule off." if done else "There was no schedule on here."], private=False)

    # --- answering -------------------------------------------------------------------------------------------

    def listener(self, handler: Callable[[AsyncArgs], Awaitable[None]]):
        """handler as a bolt listener: kept track of, so that a shutdown lets it finish; an error a person can
        act on goes to the command's sender only (in the acknowledgement, or after it through response_url)."""

        async def listener(args: AsyncArgs) -> None:
            task = asyncio.current_task()
            self.in_flight.add(task)
            try:
                await handler(args)
            except ProverbotError as err:
                await self.tell(args, f"Sorry: {replies.error(err)}")
            except SlackApiError as err:
                log.warning("Slack refused a call: %s", err)
                await self.tell(args, f"Sorry: {refused(err)}")
            except Exception as err:
                log.error("%s failed", (args.command or {}).get("command") or args.body.get("type"), exc_info=err)
                await self.tell(args, f"Sorry, that failed unexpectedly ({type(err).__name__}); the bot's log has "
                                      "the details.")
            finally:
                self.in_flight.discard(task)

        return listener

    async def tell(self, args: AsyncArgs, text: str) -> None:
        """An error for the command's sender only; an event's is logged."""
        if args.command is None:
            log.warning("%s: %s", args.body.get("event", {}).get("type"), text)
        elif args.ack.response is None:
            await args.ack(message(text, private=True))
        else:
            await self.respond(args.command["response_url"], [text], private=True)

    async def respond(self, url: str, lines: Iterable[str], private: bool = True) -> None:
        """Lines through a command's response_url, only to its sender (private) or to the channel, in as many
        messages as the limit needs (Slack takes 5: the rest is cut)."""
        texts = pages(lines)
        if len(texts) > RESPONSES:
            texts[RESPONSES - 1:] = [fit("\n".join(texts[RESPONSES - 1:]))]
        webhook = AsyncWebhookClient(url)
        for text in texts:
            sent = await webhook.send_dict(message(text, private))
            if sent.status_code != 200:
                log.warning("Slack refused an answer through response_url (%s): %s", sent.status_code, sent.body)

    async def send(self, channel: str, text: str) -> str:
        """A message in the channel, formatting off; returns its ts."""
        sent = await self.client.chat_postMessage(channel=channel, text=fit(text), mrkdwn=False)
        return sent["ts"]

    def spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # --- serving ---------------------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Check the tokens, then take Slack's requests (Socket Mode, or HTTP on options.port) until cancelled."""
        try:
            identity = await self.client.auth_test()
        except SlackApiError as err:
            raise ProverbotError(f"Slack refused SLACK_BOT_TOKEN ({err.response.get('error')}): copy the Bot User "
                                 "OAuth Token (xoxb-...) again from the app's OAuth & Permissions page.") from None
        log.info("logged in to Slack as %s in %s", identity.get("user"), identity.get("team"))
        try:
            if self.options.http:
                await self.serve_http()
            else:
                await self.serve_socket_mode()
        finally:
            await finish_in_flight(self.in_flight)

    async def serve_socket_mode(self) -> None:
        handler = AsyncSocketModeHandler(self.app, self.tokens.app)
        try:
            try:
                handler.client.wss_uri = await handler.client.issue_new_wss_url()
            except SlackApiError as err:
                raise ProverbotError(f"Slack refused SLACK_APP_TOKEN ({err.response.get('error')}): create an "
                                     "app-level token (xapp-...) with the connections:write scope on the app's Basic "
                                     "Information page, and turn Socket Mode on.") from None
            await handler.connect_async()
            self.socket = handler.client
            log.info("connected to Slack in Socket Mode")
            await asyncio.get_running_loop().create_future()       # until cancelled
        finally:
            self.socket = None
            await handler.close_async()

    async def serve_http(self) -> None:
        runner = web.AppRunner(self.app.web_app(path=PATH, port=self.options.port), shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.options.host, self.options.port).start()
            self.server = runner
            log.info("taking Slack's requests on port %d, path %s", runner.addresses[0][1], PATH)
            await asyncio.get_running_loop().create_future()       # until cancelled
        finally:
            self.server = None
            await runner.cleanup()

    # --- chatbot.scheduler.Frontend --------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Socket Mode: the WebSocket to Slack is open; HTTP mode: the server listens."""
        if self.socket is not None:
            session = self.socket.current_session
            return session is not None and not session.closed and not self.socket.stale
        return self.server is not None

    def quote(self, text: str) -> str:
        return quote(text)

    async def announce(self, ctx: Context, text: str) -> None:
        for page in pages(text.split("\n")):
            await self.send(ctx.channel_id, page)

    async def present(self, ctx: Context, result: AskResult, note: str) -> None:
        await self.announce(ctx, f"{note}\n{replies.asked(result, self.vote_hint)}")
        await self.show(ctx.channel_id, result)
