"""A fake of Slack on 127.0.0.1: its Web API, response URLs and the Socket Mode WebSocket, enough for slack-bolt's
and slack_sdk's own client code.

    async with FakeSlack() as fake:                    # AsyncWebClient(base_url=fake.api_url) talks to it
        body = fake.command("/proverb", 'prefix:"thou shalt"', "U0ADA")        # what Slack would send
        await bot.app.async_dispatch(AsyncBoltRequest(body=form(body), headers=signed(form(body))))
        assert fake.posted("C0PROVERBS")[0]["text"].startswith("ada asked")

Web API: GET or POST /api/<method>, routed on the path alone (bolt calls /auth.test?team_id=...), arguments from the
query, a form or JSON, the token from the Authorization header. It answers the methods the bot uses in Slack's
shapes, {"ok": false, "error": ...} for a wrong token, a channel the bot is not in or an unknown method, and records
every call. A command's response_url is /response/<n> here: what is posted there is recorded. apps.connections.open
(with the app token) gives ws://127.0.0.1:<port>/socket, where the fake says hello, and a test delivers envelopes and
reads their acknowledgements (matched by envelope_id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Self
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web

from chatbot.frontends import slack_setup
from tests.fakes.loopback import guard_network

TEAM = "T0TEAM"
CHANNEL = "C0PROVERBS"
ELSEWHERE = "C0ELSEWHERE"             # a channel the bot is not in
BOT_USER = "U0BOT"                    # the bot's own user
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
SIGNING_SECRET = "test-signing-secret"
POSTERS = "S0POSTERS"                 # a user group: bob is in it


def person(user_id: str, name: str, admin: bool = False, bot: bool = False) -> dict:
    return {"id": user_id, "team_id": TEAM, "name": name, "real_name": name.title(), "is_admin": admin,
            "is_owner": False, "is_bot": bot, "profile": {"display_name": name, "real_name": name.title()}}


USERS = {user["id"]: user for user in (
    person("U0ADA", "ada"), person("U0BOB", "bob"), person("U0EVE", "eve"), person("U0ADMIN", "root", admin=True),
    person("U0OTHERBOT", "otherbot", bot=True), person(BOT_USER, "proverbot", bot=True))}


@dataclass
class Call:
    method: str
    args: dict
    token: str | None


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: list[dict] = []                      # chat.postMessage arguments, with the ts given
        self.reactions: list[tuple[str, str, str]] = []     # (channel, ts, name) the bot added
        self.responses: dict[str, list[dict]] = {}          # response_url key → what was posted there
        self.usergroups = {POSTERS: ["U0BOB"]}
        self.members = {CHANNEL}                            # channels the bot is in
        self.held: dict[str, asyncio.Event] = {}            # method → released when set
        self.acks: dict[str, dict] = {}                     # envelope id → the acknowledgement
        self.socket: web.WebSocketResponse | None = None
        self.connected = asyncio.Event()
        self.ts = (f"{1_800_000_000 + n}.000100" for n in itertools.count())
        self.ids = itertools.count(1)
        self.runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self.api)
        app.router.add_post("/response/{key}", self.response)
        app.router.add_get("/socket", self.websocket)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        if self.socket is not None:
            await self.socket.close()
        await self.runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def until(self, condition, timeout: float = 60) -> None:
        """Wait (polling every few ms) until condition() is true."""
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` wait until the returned event is set."""
        self.held[method] = asyncio.Event()
        return self.held[method]

    # --- what Slack sends ------------------------------------------------------------------------------------

    def command(self, name: str, text: str = "", user: str = "U0ADA", channel: str = CHANNEL) -> dict:
        """A slash command's payload, with a response_url of its own on this fake (Slack escapes &, < and >)."""
        key = str(next(self.ids))
        self.responses[key] = []
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"token": "deprecated", "team_id": TEAM, "team_domain": "proverbs", "channel_id": channel,
                "channel_name": "proverbs", "user_id": user, "user_name": USERS[user]["name"], "command": name,
                "text": escaped, "api_app_id": "A0APP", "is_enterprise_install": "false",
                "response_url": f"{self.url}/response/{key}", "trigger_id": f"trigger.{key}"}

    def reaction(self, kind: str, user: str, ts: str, name: str = "+1", channel: str = CHANNEL) -> dict:
        """A reaction_added or reaction_removed event callback."""
        event = {"type": kind, "user": user, "reaction": name, "item_user": BOT_USER, "event_ts": f"{time.time():.6f}",
                 "item": {"type": "message", "channel": channel, "ts": ts}}
        return {"token": "deprecated", "team_id": TEAM, "api_app_id": "A0APP", "event": event, "type": "event_callback",
                "event_id": f"Ev{next(self.ids)}", "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}]}

    def answers(self, command: dict) -> list[dict]:
        """What the bot posted to that command's response_url."""
        return self.responses[command["response_url"].rsplit("/", 1)[1]]

    def posted(self, channel: str = CHANNEL) -> list[dict]:
        return [m for m in self.messages if m["channel"] == channel]

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    # --- the Web API -----------------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = dict(request.query)
        if request.content_type == "application/json":
            args |= await request.json()
        elif request.can_read_body:
            args |= dict(parse_qsl(await request.text()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        self.calls.append(Call(method, args, token))
        if method in self.held:
            await self.held[method].wait()
        wanted = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != wanted:
            return slack({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, method.replace(".", "_"), None)
        return slack(handler(args) if handler else {"ok": False, "error": "unknown_method"})

    def auth_test(self, args: dict) -> dict:
        return {"ok": True, "url": "https://proverbs.slack.com/", "team": "Proverb lovers", "user": "proverbot",
                "team_id": TEAM, "user_id": BOT_USER, "bot_id": "B0BOT", "is_enterprise_install": False}

    def apps_connections_open(self, args: dict) -> dict:
        return {"ok": True, "url": self.url.replace("http://", "ws://") + "/socket?ticket=1"}

    def chat_postMessage(self, args: dict) -> dict:
        if args["channel"] not in self.members:
            return {"ok": False, "error": "not_in_channel"}
        sent = {**args, "ts": next(self.ts)}
        self.messages.append(sent)
        return {"ok": True, "channel": args["channel"], "ts": sent["ts"],
                "message": {"type": "message", "text": args.get("text", ""), "user": BOT_USER, "ts": sent["ts"]}}

    def reactions_add(self, args: dict) -> dict:
        self.reactions.append((args["channel"], args["timestamp"], args["name"]))
        return {"ok": True}

    def users_info(self, args: dict) -> dict:
        if args["user"] not in USERS:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": USERS[args["user"]]}

    def usergroups_users_list(self, args: dict) -> dict:
        if args["usergroup"] not in self.usergroups:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": self.usergroups[args["usergroup"]]}

    # --- response URLs and Socket Mode -----------------------------------------------------------------------

    async def response(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.responses:
            return web.Response(status=404, text="expired_url")
        self.responses[key].append(await request.json())
        return web.Response(text="ok")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.socket = socket
        await socket.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0APP"},
                                "debug_info": {"host": "fake"}})
        self.connected.set()
        async for frame in socket:
            if frame.type == WSMsgType.TEXT:
                ack = json.loads(frame.data)
                self.acks[ack["envelope_id"]] = ack
        return socket

    async def deliver(self, kind: str, payload: dict, timeout: float = 30) -> dict:
        """An envelope (slash_commands, events_api) over the socket; returns its acknowledgement."""
        envelope_id = f"envelope-{next(self.ids)}"
        await self.socket.send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                     "accepts_response_payload": kind == "slash_commands"})
        await self.until(lambda: envelope_id in self.acks, timeout)
        return self.acks[envelope_id]


@asynccontextmanager
async def fake_slack(monkeypatch) -> AsyncIterator[FakeSlack]:
    """A running FakeSlack that the bot's Web API calls go to; nothing may leave 127.0.0.1 meanwhile."""
    guard_network(monkeypatch)
    async with FakeSlack() as fake:
        monkeypatch.setattr(slack_setup, "API_URL", fake.api_url)
        yield fake


def slack(payload: dict) -> web.Response:
    """A Web API answer: Slack says 200 and ok true or false."""
    return web.json_response(payload)


def form(body: dict) -> str:
    return urlencode(body)


def signed(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None,
           content_type: str = "application/x-www-form-urlencoded") -> dict[str, str]:
    """Headers Slack sends with `body`: X-Slack-Signature v0, HMAC-SHA256 of v0:{timestamp}:{body}."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": f"v0={digest}"}
