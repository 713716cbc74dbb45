"""What the Discord front end (chatbot/frontends/discord_bot.py) stands on: its settings, Discord's text rules, who
may post, and the client that connects (intents, command tree and sync, login, health, shutdown).

    options = DiscordOptions.from_settings(settings)    # checked: the post permission, the vote emoji
    invite_url(application_id)                          # adds the bot with exactly PERMISSIONS
    MESSAGES.fit(quote(text))                           # shown as it is, cut to 2,000 characters with a visible mark
    check_may_post(interaction, options)                # NotAllowed without the role or permission

Nothing the bot sends can ping anyone: allowed_mentions is none (NO_PINGS) on every message, and generated or
user-given text has its markdown and mentions escaped (quote). The bot asks only for the guilds and guild-reactions
intents (no privileged message-content intent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import discord
from discord import app_commands
from discord.ext import commands

from chatbot.config import ConfigError, Settings
from chatbot.core import BadRequest
from chatbot.frontends.common import MAX_COMMAND, InFlight, Messages, NotAllowed, check_length
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

MESSAGES = Messages(2000, dangling=r"\\+")  # Discord's limit; a cut text must not end in half an escape (a backslash)
NO_PINGS = discord.AllowedMentions.none()
# What the bot needs in a channel: to see it, send the scheduled batches, add the vote reactions (which needs the
# message history). Slash-command answers go through the interaction itself.
PERMISSIONS = discord.Permissions(view_channel=True, send_messages=True, add_reactions=True, read_message_history=True)


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with exactly the permissions it needs, and its slash commands."""
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS, scopes=("bot", "applications.commands"))


@dataclass(frozen=True)
class DiscordOptions:
    guild_id: int | None = None                               # sync commands to this server only (development)
    post_roles: tuple[str, ...] = ()                          # role names or ids that may /post
    post_permission: str = "manage_guild"                     # ... as may members with this permission
    vote_emoji: tuple[str, ...] = field(default=("👍",))

    def __post_init__(self) -> None:
        if self.post_permission not in discord.Permissions.VALID_FLAGS:
            raise ConfigError(f"discord_post_permission {self.post_permission!r} is not a Discord permission; use "
                              "e.g. manage_guild, manage_messages or administrator.")
        if not self.vote_emoji or any(not emoji.strip() or len(emoji) > 64 for emoji in self.vote_emoji):
            raise ConfigError("discord_vote_emoji needs at least one emoji, each a unicode emoji or <:name:id>.")

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordOptions:
        return cls(settings.discord_guild_id, tuple(settings.discord_post_roles), settings.discord_post_permission,
                   tuple(settings.discord_vote_emoji))


def quote(text: str) -> str:
    """Generated or user-given text, shown as it is: no markdown, no mentions."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def check_may_post(interaction: discord.Interaction, options: DiscordOptions) -> None:
    permissions = interaction.permissions
    if permissions.administrator or getattr(permissions, options.post_permission, False):
        return
    roles = getattr(interaction.user, "roles", [])
    if any(str(role.id) in options.post_roles or role.name in options.post_roles for role in roles):
        return
    needed = options.post_permission.replace("_", " ")
    named = f" or the role {' / '.join(options.post_roles)}" if options.post_roles else ""
    raise NotAllowed(f"Posting and schedules need the {needed} permission{named}.")


# --- the connection: intents, command tree and sync, login, health, shutdown ----------------------------------

def typed(options: list[dict]) -> int:
    """The characters typed into a command's options (its subcommand's included), as Discord sent them."""
    return sum(len(str(option.get("value", ""))) + typed(option.get("options", [])) for option in options)


class Tree(app_commands.CommandTree):
    """The command tree, keeping track of the commands in flight (the client's in_flight: common.InFlight) so that a
    shutdown can let them finish."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        self.client.in_flight.track()     # the task discord.py runs this command (or autocomplete) in
        size = typed((interaction.data or {}).get("options", []))    # declared ranges are not enforced on arrival
        if size > MAX_COMMAND and interaction.type is discord.InteractionType.autocomplete:
            return False
        try:
            check_length(size)
        except BadRequest as err:
            raise app_commands.CheckFailure(str(err)) from None
        return True


class DiscordClient(commands.Bot):
    """The connection to Discord: the intents, the command tree, command sync at start, logging in, health, and the
    commands in flight let finish at shutdown. The bot (chatbot.frontends.discord_bot) adds its commands."""

    def __init__(self, options: DiscordOptions, **client_options) -> None:
        intents = discord.Intents.none()
        intents.guilds = True                 # channels and roles; no member list, no message content
        intents.guild_reactions = True        # the votes
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, allowed_mentions=NO_PINGS,
                         help_command=None, tree_cls=Tree, **client_options)
        self.in_flight = InFlight()
        self.options = options

    async def setup_hook(self) -> None:
        """The slash commands registered with Discord: in one server (at once, for development) or globally."""
        guild = discord.Object(self.options.guild_id) if self.options.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        log.info("synced %d slash commands %s", len(synced),
                 f"to server {self.options.guild_id}" if guild else "globally (they may take a while to appear)")

    async def on_ready(self) -> None:
        log.info("logged in to Discord as %s (%s) in %d server(s); invite it with %s", self.user, self.user.id,
                 len(self.guilds), invite_url(self.application_id))

    async def serve(self, token: str) -> None:
        """Log in and stay connected (reconnecting as needed) until cancelled or closed."""
        try:
            try:
                await self.login(token)
            except discord.LoginFailure:
                raise ProverbotError("Discord refused DISCORD_TOKEN (401): copy the bot token again from the "
                                     "Developer Portal (Bot → Reset Token).") from None
            await self.connect()
        finally:
            await self.in_flight.finish()
            await self.close()

    def healthy(self) -> bool:
        return self.is_ready() and not self.is_closed() and self.latency != float("inf")
