"""The Discord front end: slash commands and reaction votes over the core, with discord.py 2.x.

    bot = DiscordBot(core, DiscordOptions(post_roles=["poster"]))
    await bot.serve(os.environ["DISCORD_TOKEN"])        # until closed

/proverb samples in the model worker (the interaction is deferred at once: Discord wants an answer in 3 seconds),
then shows each candidate in a message of its own with the vote emoji pre-added; reactions on those messages are
votes (raw events, so messages from before a restart count too; bots never count). /post, /schedule daily and
/schedule off need the configured role or permission. Every parameter is checked again here, since Discord
clients can send values outside the declared ranges; a bad one gets an error only its sender sees. Nothing the
bot sends can ping anyone: allowed_mentions is none on every message, and generated or user-given text has its
markdown and mentions escaped and is cut to Discord's 2,000 characters with a visible mark.

The bot asks only for the guilds and guild-reactions intents (no privileged message-content intent).
"""

from __future__ import annotations

import asyncio
import logging
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import discord
from discord import app_commands
from discord.ext import commands

from chatbot import replies
from chatbot.config import ConfigError
from chatbot.context import Context
from chatbot.core import (
    COUNT,
    LENGTH,
    MAX_PREFIX,
    TEMPERATURE,
    WINDOW,
    AskResult,
    Core,
)
from chatbot.frontends import common
from chatbot.frontends.common import NotAllowed, candidate_id, finish_in_flight
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

PLATFORM = "discord"
LIMIT = 2000                        # characters in one Discord message
DANGLING = r"\\+"                   # a cut text must not end in half an escape (a backslash)
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
    def from_settings(cls, settings) -> DiscordOptions:
        return cls(settings.discord_guild_id, tuple(settings.discord_post_roles), settings.discord_post_permission,
                   tuple(settings.discord_vote_emoji))


def quote(text: str) -> str:
    """Generated or user-given text, shown as it is: no markdown, no mentions."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def fit(text: str, limit: int = LIMIT) -> str:
    """text cut to `limit` characters, with a visible mark when something was cut."""
    return common.fit(text, limit, DANGLING)


def pages(lines: Iterable[str], limit: int = LIMIT) -> list[str]:
    """Lines packed into as few messages as fit Discord's limit (a line too long for one is trimmed)."""
    return common.pages(lines, limit, DANGLING)


def context(interaction: discord.Interaction) -> Context:
    guild = interaction.guild_id
    return Context(PLATFORM, channel_id=str(interaction.channel_id), user_id=str(interaction.user.id),
                   user_name=interaction.user.display_name, server_id=str(guild) if guild else None)


class Proverbs(commands.Cog):
    """The bot's commands and its reaction votes."""

    schedule = app_commands.Group(name="schedule", description="Post the top-voted of a daily batch here.",
                                  allowed_contexts=app_commands.AppCommandContext(guild=True))

    def __init__(self, bot: DiscordBot) -> None:
        self.bot, self.core, self.options = bot, bot.core, bot.options
        self.vote_hint = f"React with {' or '.join(self.options.vote_emoji)} to vote; /post posts the top-voted."

    # --- sampling --------------------------------------------------------------------------------------------

    @app_commands.command(description="Sample candidates from the model; vote for them with reactions.")
    @app_commands.describe(prefix="Text the candidates start with", temperature="Higher is wilder (default 0.7)",
                           count="How many candidates to show", length="At most this many tokens per candidate")
    @app_commands.guild_only()
    async def proverb(self, interaction: discord.Interaction,
                      prefix: app_commands.Range[str, 1, MAX_PREFIX] | None = None,
                      temperature: app_commands.Range[float, *TEMPERATURE] | None = None,
                      count: app_commands.Range[int, *COUNT] | None = None,
                      length: app_commands.Range[int, *LENGTH] | None = None) -> None:
        self.core.request(prefix or "", temperature, count, length)       # a bad value: refused privately, now
        await interaction.response.defer(thinking=True)
        notices: list[asyncio.Task] = []
        result = await self.core.ask(context(interaction), prefix or "", temperature, count, length,
                                     on_queued=partial(self.queued, interaction, notices))
        await asyncio.gather(*notices, return_exceptions=True)     # a queue notice never lands after the answer
        asked = f"{quote(interaction.user.display_name)} asked for “{quote(prefix)}”" if prefix else \
            f"{quote(interaction.user.display_name)} asked"
        await interaction.edit_original_response(content=fit(f"{asked}: {replies.asked(result, self.vote_hint)}"))
        await self.show(partial(interaction.followup.send, wait=True), result)

    @staticmethod
    def queued(interaction: discord.Interaction, notices: list[asyncio.Task], position: int) -> None:
        text = f"Waiting for the model: #{position} in the queue."
        notices.append(asyncio.create_task(interaction.edit_original_response(content=text)))

    async def show(self, send: Callable[..., Awaitable[discord.Message]], result: AskResult) -> None:
        """One message per candidate, remembered in the log, with the vote emoji added by the bot."""
        for candidate in result.candidates:
            message = await send(content=fit(f"**{candidate.number}.** {quote(candidate.text)}  `#{candidate.id}`"),
                                 allowed_mentions=NO_PINGS)
            await self.core.shown_in(candidate.id, str(message.id))
            for emoji in self.options.vote_emoji:
                try:
                    await message.add_reaction(emoji)
                except discord.HTTPException as err:
                    log.warning("could not add %s to message %s: %s", emoji, message.id, err)

    # --- votes -----------------------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.member is None or payload.member.bot or not self.is_vote(payload):
            return
        ctx = Context(PLATFORM, channel_id=str(payload.channel_id), user_id=str(payload.user_id),
                      user_name=payload.member.display_name, server_id=str(payload.guild_id))
        await self.core.react(ctx, str(payload.message_id), str(payload.emoji))

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if not self.is_vote(payload):
            return
        ctx = Context(PLATFORM, channel_id=str(payload.channel_id), user_id=str(payload.user_id))
        await self.core.react(ctx, str(payload.message_id), str(payload.emoji), added=False)

    @commands.Cog.listener()
    async def on_raw_reaction_clear(self, payload: discord.RawReactionClearEvent) -> None:
        await self.core.clear_reactions(Context(PLATFORM), str(payload.message_id))

    @commands.Cog.listener()
    async def on_raw_reaction_clear_emoji(self, payload: discord.RawReactionClearEmojiEvent) -> None:
        await self.core.clear_reactions(Context(PLATFORM), str(payload.message_id), str(payload.emoji))

    def is_vote(self, payload: discord.RawReactionActionEvent) -> bool:
        return (payload.guild_id is not None and payload.user_id != self.bot.user.id
                and str(payload.emoji) in self.options.vote_emoji)

    @app_commands.command(description="The votes on the latest batch in this channel.")
    @app_commands.guild_only()
    async def votes(self, interaction: discord.Interaction) -> None:
        await self.reply(interaction, replies.tally(await self.core.votes(context(interaction)), quote))

    # --- posting ---------------------------------------------------------------------------------------------

    async def publishers(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Autocomplete for `to`: the publishers configured here."""
        return [app_commands.Choice(name=name, value=name) for name in self.core.publishers.names
                if current.lower() in name]

    @app_commands.command(description="Publish the top-voted candidate of the latest batch here, or the one named.")
    @app_commands.describe(candidate="A candidate of the latest batch (default: the top-voted; ties: the earlier)",
                           to="Where to post (default: this channel's or the bot's publisher)")
    @app_commands.autocomplete(to=publishers)
    @app_commands.guild_only()
    async def post(self, interaction: discord.Interaction, candidate: app_commands.Range[str, 1, 20] | None = None,
                   to: app_commands.Range[str, 1, 20] | None = None) -> None:
        self.check_may_post(interaction)
        ctx = context(interaction)
        chosen = await candidate_id(self.core, ctx, candidate) if candidate else None
        if to is not None:
            self.core.publishers.get(to)                     # an unknown one: refused privately, now
        await interaction.response.defer(thinking=True)
        posted = await self.core.post(ctx, chosen, to=to)
        await interaction.edit_original_response(content=fit(replies.posted(posted, quote)))

    @post.autocomplete("candidate")
    async def candidates_of_latest_batch(self, interaction: discord.Interaction,
                                         current: str) -> list[app_commands.Choice[str]]:
        try:
            rows = await self.core.votes(context(interaction))
        except ProverbotError:
            return []
        choices = [app_commands.Choice(name=fit(f"{number}. ({row.votes}) {row.text}", 100), value=str(number))
                   for number, row in enumerate(rows, 1)]
        return [choice for choice in choices if current.lower() in choice.name.lower()][:25]

    def check_may_post(self, interaction: discord.Interaction) -> None:
        permissions = interaction.permissions
        if permissions.administrator or getattr(permissions, self.options.post_permission, False):
            return
        roles = getattr(interaction.user, "roles", [])
        if any(str(role.id) in self.options.post_roles or role.name in self.options.post_roles for role in roles):
            return
        needed = self.options.post_permission.replace("_", " ")
        named = f" or the role {' / '.join(self.options.post_roles)}" if self.options.post_roles else ""
        raise NotAllowed(f"Posting and schedules need the {needed} permission{named}.")

    # --- history and status ----------------------------------------------------------------------------------

    @app_commands.command(description="The most recent posts, with links.")
    @app_commands.describe(n="How many posts to show")
    @app_commands.guild_only()
    async def history(self, interaction: discord.Interaction, n: app_commands.Range[int, 1, 50] = 10) -> None:
        await self.reply(interaction, replies.history(await self.core.history(context(interaction), n), quote))

    @app_commands.command(description="The model, the queue, recent posts and this channel's schedule.")
    @app_commands.guild_only()
    async def status(self, interaction: discord.Interaction) -> None:
        ctx = context(interaction)
        await self.reply(interaction, [replies.status(await self.core.status()),
                                       replies.schedule(await self.core.schedule(ctx))])

    # --- schedules -------------------------------------------------------------------------------------------

    @schedule.command(name="daily", description="Each day at this time: sample a batch here, then post the top-voted.")
    @app_commands.describe(time="HH:MM, 24-hour clock", timezone="A time zone such as Europe/Paris (default UTC)",
                           window="Minutes the batch stays open to votes (default 60)",
                           to="Where to post (default: this channel's or the bot's publisher)")
    @app_commands.autocomplete(to=publishers)
    async def schedule_daily(self, interaction: discord.Interaction, time: app_commands.Range[str, 1, 5],
                             timezone: app_commands.Range[str, 1, 64] = "UTC",
                             window: app_commands.Range[int, *WINDOW] = 60,
                             to: app_commands.Range[str, 1, 20] | None = None) -> None:
        self.check_may_post(interaction)
        schedule = await self.core.set_schedule(context(interaction), time, timezone, window_minutes=window,
                                                publisher=to)
        await interaction.response.send_message(replies.schedule(schedule), allowed_mentions=NO_PINGS)

    @schedule_daily.autocomplete("timezone")
    async def timezones(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = sorted(name for name in zoneinfo.available_timezones() if current.lower() in name.lower())
        return [app_commands.Choice(name=name, value=name) for name in names[:25]]

    @schedule.command(name="show", description="This channel's daily schedule.")
    async def schedule_show(self, interaction: discord.Interaction) -> None:
        await self.reply(interaction, [replies.schedule(await self.core.schedule(context(interaction)))])

    @schedule.command(name="off", description="Stop this channel's daily posts.")
    async def schedule_off(self, interaction: discord.Interaction) -> None:
        self.check_may_post(interaction)
        done = await self.core.schedule_off(context(interaction))
        await interaction.response.send_message("Schedule off." if done else "There was no schedule on here.",
                                                allowed_mentions=NO_PINGS)

    # --- answering -------------------------------------------------------------------------------------------

    async def reply(self, interaction: discord.Interaction, lines: Iterable[str]) -> None:
        """Lines only the caller sees, in as many messages as Discord's limit needs."""
        first, *rest = pages(lines)
        await interaction.response.send_message(first, ephemeral=True, allowed_mentions=NO_PINGS)
        for page in rest:
            await interaction.followup.send(page, ephemeral=True, allowed_mentions=NO_PINGS)


class Tree(app_commands.CommandTree):
    """The command tree, keeping track of the commands in flight so that a shutdown can let them finish."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        task = asyncio.current_task()                 # the task discord.py runs this command (or autocomplete) in
        self.client.in_flight.add(task)
        task.add_done_callback(self.client.in_flight.discard)
        return True


class DiscordBot(commands.Bot):
    """The bot: the Proverbs cog, command sync at start, and what the scheduler needs (chatbot.scheduler.Frontend)."""

    platform = PLATFORM

    def __init__(self, core: Core, options: DiscordOptions | None = None, **client_options) -> None:
        intents = discord.Intents.none()
        intents.guilds = True                 # channels and roles; no member list, no message content
        intents.guild_reactions = True        # the votes
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, allowed_mentions=NO_PINGS,
                         help_command=None, tree_cls=Tree, **client_options)
        self.in_flight: set[asyncio.Task] = set()
        self.core = core
        self.options = options or DiscordOptions()
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        await self.add_cog(Proverbs(self))
        guild = discord.Object(self.options.guild_id) if self.options.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        log.info("synced %d slash commands %s", len(synced),
                 f"to server {self.options.guild_id}" if guild else "globally (they may take a while to appear)")

    async def on_app_command_error(self, interaction: discord.Interaction,
                                   error: app_commands.AppCommandError) -> None:
        """Errors a person can act on go to them (privately when nothing was said yet); others are logged."""
        cause = getattr(error, "original", error)
        if isinstance(cause, ProverbotError):
            text = f"Sorry: {replies.error(cause)}"
        elif isinstance(cause, app_commands.AppCommandError):      # a bad option type, a DM, ...
            text = f"Sorry: {cause}"
        else:
            log.error("/%s failed", interaction.command.qualified_name if interaction.command else "?",
                      exc_info=cause)
            text = f"Sorry, that failed unexpectedly ({type(cause).__name__}); the bot's log has the details."
        text = fit(text)
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)
            else:                                        # deferred: the "thinking…" message becomes the answer
                await interaction.edit_original_response(content=text)
        except discord.HTTPException:
            log.warning("could not tell %s: %s", interaction.user.id, text)

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
            await finish_in_flight(self.in_flight)
            await self.close()

    # --- chatbot.scheduler.Frontend --------------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.is_ready() and not self.is_closed() and self.latency != float("inf")

    def quote(self, text: str) -> str:
        return quote(text)

    async def announce(self, ctx: Context, text: str) -> None:
        channel = self.get_partial_messageable(int(ctx.channel_id))
        for page in pages(text.split("\n")):
            await channel.send(page, allowed_mentions=NO_PINGS)

    async def present(self, ctx: Context, result: AskResult, note: str) -> None:
        cog: Proverbs = self.get_cog("Proverbs")
        await self.announce(ctx, f"{note}\n{replies.asked(result, cog.vote_hint)}")
        await cog.show(self.get_partial_messageable(int(ctx.channel_id)).send, result)
