"""What the Slack front end (chatbot/frontends/slack_bot.py) stands on: its tokens and settings, Slack's text rules,
who may post, and the connection that takes Slack's requests.

    tokens = SlackTokens.from_settings(settings, http=False)   # SLACK_BOT_TOKEN and SLACK_APP_TOKEN, or one line
    options = SlackOptions.from_settings(settings)              # checked: reaction names, user and group ids
    app = make_app(tokens)                                      # the bolt app, its client on Slack's Web API
    await Connection(app, tokens, options).serve()              # Socket Mode or HTTP, until cancelled

Nothing the bot sends can ping anyone or be formatted: every message goes out with mrkdwn off, generated and
user-given text has &, < and > escaped (so no <!channel>, <!here>, <@U…> or <#C…>) and every @ defused, and a
message is cut to Slack's 4,000 characters with a visible mark.

Socket Mode (the default) needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN and no public URL. HTTP mode needs
SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET and takes Slack's requests on POST /slack/events: bolt refuses (401) a
request whose signature does not match or whose timestamp is more than 5 minutes away (a replay). The app is
created from slack/manifest.yml, which names exactly the scopes, events and commands the front end uses.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from chatbot.config import ConfigError, Settings
from chatbot.frontends import common
from chatbot.frontends.common import SHUTDOWN_GRACE, Messages, NotAllowed
from chatbot.publishers.credentials import reveal
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

API_URL = "https://slack.com/api/"  # Slack's Web API
PATH = "/slack/events"              # where HTTP mode takes Slack's requests (commands and events)
MESSAGES = Messages(4000, dangling=r"&[a-z]{0,3}")   # Slack cuts longer texts; a cut never ends in half of &amp;
RESPONSES = 5                       # messages a command's response_url takes
REACTION = re.compile(r"[a-z0-9_+'\-]{1,100}")
USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
USERGROUP_ID = re.compile(r"S[A-Z0-9]{2,}")


@dataclass(frozen=True)
class SlackTokens:
    bot: str = field(repr=False)                            # SLACK_BOT_TOKEN, xoxb-...
    app: str | None = field(default=None, repr=False)       # SLACK_APP_TOKEN, xapp-...: Socket Mode
    signing_secret: str | None = field(default=None, repr=False)   # SLACK_SIGNING_SECRET: HTTP mode

    @classmethod
    def from_settings(cls, settings: Settings, http: bool) -> SlackTokens:
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
    def from_settings(cls, settings: Settings) -> SlackOptions:
        return cls(tuple(settings.slack_post_users), tuple(settings.slack_post_usergroups), settings.slack_post_admins,
                   tuple(name.strip(":") for name in settings.slack_vote_reactions), settings.slack_http,
                   settings.slack_port)


# --- text -----------------------------------------------------------------------------------------------------

def quote(text: str) -> str:
    """Generated or user-given text, shown as it is: &, < and > escaped (no <!channel>, <@U…> or <#C…> can form)
    and a zero-width space after every @ (no @here either). Formatting is off in every message the bot sends."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("@", "@\u200b")


def words(text: str) -> list[str]:
    """A command's text as shell-like words. Slack sends &, < and > escaped: they are read as themselves."""
    return common.words(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def message(text: str, private: bool = False) -> dict:
    """A message for an acknowledgement or a response_url: cut to the limit, formatting off."""
    return {"response_type": "ephemeral" if private else "in_channel", "text": MESSAGES.fit(text), "mrkdwn": False}


def message_id(channel: str, ts: str) -> str:
    """What the log remembers of a message: a ts is unique within its channel only."""
    return f"{channel}/{ts}"


async def respond(url: str, lines: Iterable[str], private: bool = True) -> None:
    """Lines through a command's response_url, only to its sender (private) or to the channel, in as many
    messages as the limit needs (Slack takes 5: the rest is cut)."""
    texts = MESSAGES.pages(lines)
    if len(texts) > RESPONSES:
        texts[RESPONSES - 1:] = [MESSAGES.fit("\n".join(texts[RESPONSES - 1:]))]
    webhook = AsyncWebhookClient(url)
    for text in texts:
        sent = await webhook.send_dict(message(text, private))
        if sent.status_code != 200:
            log.warning("Slack refused an answer through response_url (%s): %s", sent.status_code, sent.body)


class SlackRefused(ProverbotError):
    """Slack refused a call the bot made."""

    def __init__(self, err: SlackApiError) -> None:
        error = err.response.get("error", "an error")
        super().__init__(f"Slack did not let me post here ({error}): invite me to this channel first (/invite "
                         "@proverbot)." if error in ("not_in_channel", "channel_not_found") else
                         f"Slack refused a call ({error}).")


# --- who may post ---------------------------------------------------------------------------------------------

async def check_may_post(client: AsyncWebClient, options: SlackOptions, user_id: str) -> None:
    """NotAllowed unless the user is named in post_users, is a workspace admin or owner (when post_admins), or
    is in one of post_usergroups."""
    if user_id in options.post_users:
        return
    if options.post_admins:
        user = (await client.users_info(user=user_id))["user"]
        if user.get("is_admin") or user.get("is_owner"):
            return
    for group in options.post_usergroups:
        if user_id in (await client.usergroups_users_list(usergroup=group))["users"]:
            return
    who = ((["workspace admins"] if options.post_admins else []) + (["the users in slack_post_users"]
           if options.post_users else []) + ([f"members of {', '.join(options.post_usergroups)}"]
                                             if options.post_usergroups else []))
    raise NotAllowed(f"Posting and schedules are for {' or '.join(who)}." if who else
                     "Posting and schedules are off here: nobody is named in slack_post_users or "
                     "slack_post_usergroups, and slack_post_admins is false.")


# --- serving --------------------------------------------------------------------------------------------------

def make_app(tokens: SlackTokens, process_before_response: bool = False) -> AsyncApp:
    """The bolt app, its Web API client on API_URL (Slack's, or a test's fake), retrying twice when rate limited.
    process_before_response: answer each request only once its listener is done (tests: deterministic)."""
    app = AsyncApp(token=tokens.bot, signing_secret=tokens.signing_secret or "", name="proverbot",
                   process_before_response=process_before_response)
    app.client.base_url = API_URL
    app.client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return app


class Connection:
    """How the app takes Slack's requests: Socket Mode (a WebSocket the bot opens) or HTTP (a server on
    options.port), and whether that is up."""

    def __init__(self, app: AsyncApp, tokens: SlackTokens, options: SlackOptions) -> None:
        self.app, self.tokens, self.options = app, tokens, options
        self.socket: SocketModeClient | None = None             # Socket Mode, once connected
        self.server: web.AppRunner | None = None                # HTTP mode, once listening

    async def serve(self) -> None:
        """Check the tokens, then take Slack's requests (Socket Mode, or HTTP on options.port) until cancelled."""
        try:
            identity = await self.app.client.auth_test()
        except SlackApiError as err:
            raise ProverbotError(f"Slack refused SLACK_BOT_TOKEN ({err.response.get('error')}): copy the Bot User "
                                 "OAuth Token (xoxb-...) again from the app's OAuth & Permissions page.") from None
        log.info("logged in to Slack as %s in %s", identity.get("user"), identity.get("team"))
        await (self.serve_http() if self.options.http else self.serve_socket_mode())

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

    def healthy(self) -> bool:
        """Socket Mode: the WebSocket to Slack is open; HTTP mode: the server listens."""
        if self.socket is not None:
            session = self.socket.current_session
            return session is not None and not session.closed and not self.socket.stale
        return self.server is not None
