"""A fake of Discord's REST API and gateway on 127.0.0.1, enough for discord.py's own client code.

    async with FakeDiscord() as fake:                  # points discord.py's REST base and gateway here
        await bot.login("token"); asyncio.create_task(bot.connect())
        interaction = await fake.command("proverb", {"prefix": "thou shalt"}, fake.member("ada"))
        await fake.until(lambda: interaction.answered)

The gateway sends HELLO, answers IDENTIFY with READY and one GUILD_CREATE (one text channel, two roles),
acknowledges heartbeats, and lets a test dispatch any event (INTERACTION_CREATE, MESSAGE_REACTION_ADD, ...).
REST answers the routes the bot uses (login, command sync, interaction callbacks, webhooks, messages,
reactions) with Discord's response shapes and records every request; anything else is a 404 the test can see.
JSON goes out as exactly `application/json` (discord.py reads `...; charset=utf-8` as text).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Self
from urllib.parse import unquote

import discord
from aiohttp import WSMsgType, web

APP_ID = 1_100_000_000_000_000_001
BOT_ID = APP_ID
GUILD_ID = 1_100_000_000_000_000_002
CHANNEL_ID = 1_100_000_000_000_000_003
POSTER_ROLE_ID = 1_100_000_000_000_000_004
MANAGE_GUILD = 1 << 5
TOKEN = "test-token"                 # the bot token the fake accepts


def user(user_id: int, name: str, bot: bool = False) -> dict:
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
            "bot": bot}


@dataclass
class Request:
    method: str
    path: str
    body: dict | list | None


@dataclass
class Interaction:
    """One interaction the test sent, and what the bot answered to it."""

    id: int
    token: str
    callbacks: list[dict] = field(default_factory=list)     # POST /interactions/{id}/{token}/callback bodies
    original: dict | None = None                            # the response message, as last created or edited
    followups: list[dict] = field(default_factory=list)     # messages sent through the webhook

    @property
    def answered(self) -> bool:
        """A final answer is there: a message response, or a deferred one that was since edited."""
        if not self.callbacks:
            return False
        return self.callbacks[-1]["type"] in (4, 8) or bool(self.original and self.original.get("content"))

    @property
    def ephemeral(self) -> bool:
        return bool(self.callbacks and (self.callbacks[0].get("data") or {}).get("flags", 0) & 64)


class FakeDiscord:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.messages: dict[int, dict] = {}                     # every message the bot created, by id
        self.reactions: list[tuple[int, str]] = []              # (message id, emoji) the bot added
        self.interactions: dict[str, Interaction] = {}          # by token
        self.synced: list[dict] = []
        self.ids = itertools.count(1_200_000_000_000_000_000)
        self.sequence = itertools.count(1)
        self.socket: web.WebSocketResponse | None = None
        self.identified = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.saved: tuple[str, object] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get("/gateway", self.gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self.rest)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = f"http://127.0.0.1:{port}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = discord.gateway.yarl.URL(f"ws://127.0.0.1:{port}/gateway")
        return self

    async def __aexit__(self, *exc) -> None:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self.saved
        if self.socket is not None:
            await self.socket.close()
        await self.runner.cleanup()

    async def until(self, condition, timeout: float = 60) -> None:
        """Wait (polling every few ms) until condition() is true."""
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)

    # --- the gateway -----------------------------------------------------------------------------------------

    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.socket = socket
        await socket.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            payload = json.loads(message.data)
            if payload["op"] == 2:                                   # IDENTIFY
                await self.dispatch("READY", {
                    "v": 10, "user": user(BOT_ID, "proverbot", bot=True), "session_id": "session",
                    "resume_gateway_url": str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY),
                    "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                    "application": {"id": str(APP_ID), "flags": 0}})
                await self.dispatch("GUILD_CREATE", self.guild())
                self.identified.set()
            elif payload["op"] == 1:                                 # heartbeat
                await socket.send_str(json.dumps({"op": 11}))
        return socket

    async def dispatch(self, event: str, data: dict) -> None:
        await self.socket.send_str(json.dumps({"op": 0, "t": event, "s": next(self.sequence), "d": data}))

    def guild(self) -> dict:
        role = {"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0, "position": 0}
        return {"id": str(GUILD_ID), "name": "Proverb lovers", "owner_id": "1", "unavailable": False, "large": False,
                "member_count": 3, "features": [], "emojis": [], "stickers": [], "threads": [], "presences": [],
                "voice_states": [], "stage_instances": [], "guild_scheduled_events": [], "premium_tier": 0,
                "roles": [{**role, "id": str(GUILD_ID), "name": "@everyone", "permissions": "0"},
                          {**role, "id": str(POSTER_ROLE_ID), "name": "poster", "permissions": "0", "position": 1}],
                "channels": [{"id": str(CHANNEL_ID), "type": 0, "name": "proverbs", "position": 0,
                              "permission_overwrites": [], "nsfw": False}],
                "members": [self.member("proverbot", BOT_ID, bot=True)]}

    def member(self, name: str, user_id: int = 0, roles: tuple[int, ...] = (), permissions: int = 0,
               bot: bool = False) -> dict:
        """A guild member as in interaction and reaction payloads (with the `flags` discord.py requires)."""
        user_id = user_id or abs(hash(name)) % 10**17 + 10**18
        return {"user": user(user_id, name, bot), "roles": [str(r) for r in roles], "nick": None,
                "joined_at": "2030-01-01T00:00:00+00:00", "deaf": False, "mute": False, "flags": 0,
                "permissions": str(permissions)}

    # --- what a test sends -----------------------------------------------------------------------------------

    async def command(self, name: str, options: dict | None = None, member: dict | None = None,
                      subcommand: str | None = None, kind: int = 2) -> Interaction:
        """An INTERACTION_CREATE for /name [subcommand] with these options (kind 4: an autocomplete request,
        the option marked focused is the one whose value is a `Focused` string)."""
        member = member or self.member("ada")
        interaction = Interaction(next(self.ids), f"token-{next(self.ids)}")
        self.interactions[interaction.token] = interaction
        values = [self.option(key, value) for key, value in (options or {}).items()]
        if subcommand:
            values = [{"name": subcommand, "type": 1, "options": values}]
        await self.dispatch("INTERACTION_CREATE", {
            "id": str(interaction.id), "application_id": str(APP_ID), "type": kind, "token": interaction.token,
            "version": 1, "guild_id": str(GUILD_ID), "channel_id": str(CHANNEL_ID),
            "channel": {"id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": "proverbs"},
            "member": member, "app_permissions": str((1 << 41) - 1), "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 0,
            "attachment_size_limit": 10 * 2**20,
            "data": {"id": str(next(self.ids)), "name": name, "type": 1, "options": values}})
        return interaction

    @staticmethod
    def option(key: str, value) -> dict:
        if isinstance(value, Focused):
            return {"name": key, "type": 3, "value": str(value), "focused": True}
        kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 10 if isinstance(value, float) else 3
        return {"name": key, "type": kind, "value": value}

    async def react(self, event: str, message_id: int, emoji: str, member: dict | None = None) -> None:
        """MESSAGE_REACTION_ADD / _REMOVE (by member), _REMOVE_ALL or _REMOVE_EMOJI on a message."""
        data = {"channel_id": str(CHANNEL_ID), "message_id": str(message_id), "guild_id": str(GUILD_ID),
                "emoji": {"id": None, "name": emoji}}
        if member is not None:
            data |= {"user_id": member["user"]["id"], "burst": False, "type": 0}
            if event == "MESSAGE_REACTION_ADD":
                data["member"] = member
        await self.dispatch(event, data)

    # --- REST ------------------------------------------------------------------------------------------------

    async def rest(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body and request.content_type == "application/json" \
            else None
        if body is None and request.content_type.startswith("multipart/"):
            body = await self.multipart_json(request)
        path = "/" + request.match_info["path"]
        self.requests.append(Request(request.method, path, body))
        authorized = request.headers.get("Authorization") == f"Bot {TOKEN}"
        if not path.startswith(("/interactions/", "/webhooks/")) and not authorized:
            return answer({"message": "401: Unauthorized", "code": 0}, status=401)
        parts = path.strip("/").split("/")
        route = (request.method, *parts)
        match route:
            case ("GET", "users", "@me"):
                return answer(user(BOT_ID, "proverbot", bot=True))
            case ("GET", "oauth2", "applications", "@me"):
                return answer({"id": str(APP_ID), "name": "proverbot", "description": "", "icon": None,
                               "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                               "owner": user(1, "owner"), "flags": 0, "team": None, "summary": ""})
            case ("PUT", "applications", _, "commands") | ("PUT", "applications", _, "guilds", _, "commands"):
                self.synced = [{**command, "id": str(next(self.ids)), "application_id": str(APP_ID), "version": "1"}
                               for command in body]
                return answer(self.synced)
            case ("POST", "interactions", _, token, "callback"):
                return answer(self.callback(self.interactions[token], body))
            case ("PATCH", "webhooks", _, token, "messages", "@original"):
                interaction = self.interactions[token]
                interaction.original = {**(interaction.original or self.message("")), **body}
                return answer(interaction.original)
            case ("POST", "webhooks", _, token):
                message = self.message(body.get("content", ""), body.get("flags", 0), body)
                self.interactions[token].followups.append(message)
                return answer(message)
            case ("POST", "channels", _, "messages"):
                return answer(self.message(body.get("content", ""), 0, body))
            case ("PUT", "channels", _, "messages", message_id, "reactions", emoji, "@me"):
                self.reactions.append((int(message_id), unquote(emoji)))
                return web.Response(status=204)
        return answer({"message": f"fake Discord has no route {request.method} {path}", "code": 0}, status=404)

    @staticmethod
    async def multipart_json(request: web.Request) -> dict | None:
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                return json.loads(await part.text())
        return None

    def callback(self, interaction: Interaction, body: dict) -> dict:
        interaction.callbacks.append(body)
        data = body.get("data") or {}
        flags = data.get("flags", 0)
        interaction.original = self.message(data.get("content", ""), flags, data)
        loading = body["type"] == 5
        return {"interaction": {"id": str(interaction.id), "type": 2, "response_message_id": interaction.original["id"],
                                "response_message_loading": loading, "response_message_ephemeral": bool(flags & 64)},
                "resource": {"type": body["type"], "message": interaction.original}}

    def message(self, content: str, flags: int = 0, body: dict | None = None) -> dict:
        message = {"id": str(next(self.ids)), "channel_id": str(CHANNEL_ID), "guild_id": str(GUILD_ID),
                   "author": user(BOT_ID, "proverbot", bot=True), "content": content,
                   "timestamp": datetime.now(UTC).isoformat(), "edited_timestamp": None, "tts": False,
                   "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
                   "pinned": False, "type": 0, "flags": flags, "components": [],
                   "allowed_mentions": (body or {}).get("allowed_mentions")}
        self.messages[int(message["id"])] = message
        return message


class Focused(str):
    """The option value being typed, in an autocomplete request."""


def answer(payload, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), status=status, headers={"Content-Type": "application/json"})
