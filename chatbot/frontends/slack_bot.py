"""The Slack front end: slash commands and reaction votes over the core, with slack-bolt (asyncio).

    bot = SlackBot(core, SlackOptions(post_users=("U0123ABCD",)), SlackTokens.from_settings(load_settings(), False))
    await bot.serve()           # Socket Mode (HTTP mode with SlackOptions(http=True)), until cancelled

Each command runs its flow (chatbot.frontends.flows) and is acknowledged at once (Slack wants an answer within 3
seconds): a parameter that cannot be read or is out of range is refused in the acknowledgement itself, which only
its sender sees; everything else is answered after it, privately or to the channel, through the command's
response_url. /proverb answers with a summary, then posts each candidate in a message of its own
(chat.postMessage) with the vote reactions added; reactions on those messages are votes (reaction_added /
reaction_removed events; bots, this one included, never count). /post, /schedule daily and /schedule off need a
user or user group named in the settings, or a workspace admin. A command's text is read up to 1,000 characters.

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
import re
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

from chatbot.config import ConfigError, load_settings
from chatbot.context import Context
from chatbot.core import Core
from chatbot.frontends import common, flows
from chatbot.frontends.common import SHUTDOWN_GRACE, NotAllowed, finish_in_flight
from chatbot.publishers.credentials import reveal
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

PLATFORM = "slack"
API_URL = "https://slack.com/api/"  # Slack's Web API
PATH = "/slack/events"              # where HTTP mode takes Slack's requests (commands and events)
LIMIT = 4000                        # characters in one message's text (Slack cuts longer ones)
DANGLING = r"&[a-z]{0,3}"           # a cut text must not end in half an escape (&amp; &lt; &gt;)
RESPONSES = 5                       # messages a command's response_url takes
COMMANDS = ("/proverb", "/votes", "/post", "/history", "/proverb-status", "/schedule")     # as in slack/manifest.yml
REACTION = re.compile(r"[a-z0-9_+'\-]{1,100}")
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,}")


@dataclass(frozen=True)
class SlackTokens:
    bot: str = field(repr=False)                            # SLACK_BOT_TOKEN, xoxb-...
    app: str | None = field(default=None, repr=False)       # SLACK_APP_TOKEN, xapp-...: Socket Mode
    signing_secret: str | None = field(default=None, repr=False)   # SLACK_SIGNING_SECRET: HTTP mode

    @classmethod
    def from_settings(cls, settings, http: bool) -> SlackTokens:
        """The tokens the mode needs, from the settings slack_bot_token, slack_app_token and slack_signing_secret
        (set as SLACK_BOT_TOKEN, ...: chatbot/config.py); ProverbotError naming a missing one's variable."""
        found = {"SLACK_BOT_TOKEN": reveal(settings.slack_bot_token),
                 "SLACK_APP_TOKEN": reveal(settings.slack_app_token),
                 "SLACK_SIGNING_SECRET": reveal(settings.slack_signing_secret)}
        needed = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET" if http else "SLACK_APP_TOKEN")
        missing = [name for name in needed if not found[name]]
        if missing:
            mode = "HTTP mode (slack_http)" if http else "Socket Mode"
            raise ProverbotError(f"Slack in {mode} needs {' and '.join(needed)}, and {' and '.join(missing)} "
                                 "is not set: see README, Slack.")
        return cls(found["SLACK_BOT_TOKEN"], found["SLACK_APP_TOKEN"] or None, found["SLACK_SIGNING_SECRET"] or None)


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
    return common.words(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def message(text: str, private: bool = False) -> dict:
    """A message for an acknowledgement or a response_url: cut to the limit, formatting off."""
    return {"response_type": "ephemeral" if private else "in_channel", "text": fit(text), "mrkdwn": False}


def message_id(channel: str, ts: str) -> str:
    """What the log remembers of a message: a ts is unique within its channel only."""
    return f"{channel}/{ts}"


def context(command: dict) -> Context:
    return Context(PLATFORM, channel_id=command["channel_id"], user_id=command["user_id"],
                   user_name=command.get("user_name"), server_id=command.get("team_id"))


class SlackRefused(ProverbotError):
    """Slack refused a call the bot made."""

    def __init__(self, err: SlackApiError) -> None:
        error = err.response.get("error", "an error")
        super().__init__(f"Slack did not let me post here ({error}): invite me to this channel first (/invite "
                         "@proverbot)." if error in ("not_in_channel", "channel_not_found") else
                         f"Slack refused a call ({error}).")


class SlackChannel:
    """A Slack channel as flows.Channel: messages go out with chat.postMessage, formatting off."""

    def __init__(self, bot: SlackBot, ctx: Context) -> None:
        self.bot, self.ctx = bot, ctx
        self.hint, self.marks = bot.vote_hint, bot.options.vote_reactions
        self.quote, self.pages = quote, pages

    async def send(self, text: str) -> str:
        sent = await self.bot.client.chat_postMessage(channel=self.ctx.channel_id, text=fit(text), mrkdwn=False)
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
            await self.bot.check_may_post(self.args.command["user_id"])

    async def answer(self, lines: list[str], private: bool = True) -> None:
        if self.args.ack.response is None:
            await self.args.ack(message("\n".join(lines), private))
        else:
            await self.bot.respond(self.args.command["response_url"], lines, private)


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
        self.app = AsyncApp(token=self.tokens.bot, signing_secret=self.tokens.signing_secret or "", name="proverbot",
                            process_before_response=process_before_response)
        self.client: AsyncWebClient = self.app.client
        self.client.base_url = API_URL                              # Slack's (a test's fake)
        self.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        for name in COMMANDS:
            self.app.command(name)(self.listener(self.command))
        self.app.event("reaction_added")(self.listener(partial(self.reacted, added=True)))
        self.app.event("reaction_removed")(self.listener(partial(self.reacted, added=False)))
        reactions = " or ".join(f":{name}:" for name in self.options.vote_reactions)
        self.vote_hint = f"React with {reactions} to vote; /post posts the top-voted."
        self.people: dict[str, tuple[bool, str]] = {}           # user id → (a bot?, name), from users.info
        self.in_flight: set[asyncio.Task] = set()
        self.socket: SocketModeClient | None = None             # Socket Mode, once connected
        self.server: web.AppRunner | None = None                # HTTP mode, once listening

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

    async def check_may_post(self, user_id: str) -> None:
        """NotAllowed unless the user is named in post_users, is a workspace admin or owner (when post_admins), or
        is in one of post_usergroups."""
        options = self.options
        if user_id in options.post_users:
            return
        if options.post_admins:
            user = (await self.client.users_info(user=user_id))["user"]
            if user.get("is_admin") or user.get("is_owner"):
                return
        for group in options.post_usergroups:
            if user_id in (await self.client.usergroups_users_list(usergroup=group))["users"]:
                return
        who = ((["workspace admins"] if options.post_admins else []) + (["the users in slack_post_users"]
               if options.post_users else []) + ([f"members of {', '.join(options.post_usergroups)}"]
                                                 if options.post_usergroups else []))
        raise NotAllowed(f"Posting and schedules are for {' or '.join(who)}." if who else
                         "Posting and schedules are off here: nobody is named in slack_post_users or "
                         "slack_post_usergroups, and slack_post_admins is false.")

    # --- answering -------------------------------------------------------------------------------------------

    def listener(self, handler: Callable[[AsyncArgs], Awaitable[None]]):
        """handler as a bolt listener: kept track of, so that a shutdown lets it finish; a command's error goes to
        its sender only (flows.failed), an event's to the log."""

        async def listener(args: AsyncArgs) -> None:
            task = asyncio.current_task()
            self.in_flight.add(task)
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
                self.in_flight.discard(task)

        return listener

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

    def channel(self, ctx: Context) -> SlackChannel:
        return SlackChannel(self, ctx)
