"""The Discord front end: slash commands and reaction votes over the core, with discord.py 2.x.

    bot = DiscordBot(core, DiscordOptions.from_settings(settings))
    await bot.serve(reveal(settings.discord_token))     # the setting discord_token (DISCORD_TOKEN); until closed

Each command runs its flow (chatbot.frontends.flows). /proverb samples in the model worker (the interaction is
deferred at once: Discord wants an answer in 3 seconds), then shows each candidate in a message of its own with the
vote emoji pre-added; reactions on those messages are votes (raw events, so messages from before a restart count
too; bots never count). /post, /unpost, /veto, /blocklist, /schedule daily and /schedule off need the configured
role or permission: those members are the moderators, exempt from the limits per member (a refused /proverb is told
only to its sender). Every parameter is checked again, since Discord clients can send values outside the declared
ranges (and at most 1,000 characters of a command's options are read); a bad one gets an error only its sender
sees. Nothing the bot sends can ping anyone, and text is cut to Discord's 2,000 characters with a visible mark (the
rules, settings and serving are in chatbot/frontends/discord_setup.py).
"""

from __future__ import annotations

import asyncio
import logging
import zoneinfo

import discord
from discord import app_commands
from discord.ext import commands

from chatbot.context import Context
from chatbot.core import COUNT, LENGTH, MAX_PREFIX, MAX_WORD, TEMPERATURE, WINDOW, BadRequest, Core
from chatbot.frontends import flows
from chatbot.frontends.common import NotAllowed, vote_hint
from chatbot.frontends.discord_setup import MESSAGES, NO_PINGS, DiscordClient, DiscordOptions, check_may_post, quote
from model.runinfo import list_runs
from proverbot_errors import ProverbotError

log = logging.getLogger(__name__)

PLATFORM = "discord"


def context(interaction: discord.Interaction) -> Context:
    guild = interaction.guild_id
    return Context(PLATFORM, channel_id=str(interaction.channel_id), user_id=str(interaction.user.id),
                   user_name=interaction.user.display_name, server_id=str(guild) if guild else None)


class DiscordChannel:
    """A Discord channel as flows.Channel: a command's candidates go out as its followups, a scheduled run's as
    messages in the channel."""

    def __init__(self, bot: DiscordBot, ctx: Context, followup: discord.Webhook | None = None) -> None:
        self.bot, self.ctx, self.followup = bot, ctx, followup
        self.hint, self.marks = bot.vote_hint, bot.options.vote_emoji
        self.quote, self.pages = quote, MESSAGES.pages

    async def send(self, text: str) -> str:
        message = {"content": MESSAGES.fit(text), "allowed_mentions": NO_PINGS}
        sent = await (self.followup.send(wait=True, **message) if self.followup else self.here().send(**message))
        return str(sent.id)

    async def mark(self, message_id: str, emoji: str) -> None:
        await self.here().get_partial_message(int(message_id)).add_reaction(emoji)

    def here(self) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(int(self.ctx.channel_id))


class DiscordReply:
    """The answer to an interaction (flows.Reply): privately (ephemeral) or to the channel; once deferred, the
    "thinking…" message becomes the answer."""

    def __init__(self, interaction: discord.Interaction, options: DiscordOptions) -> None:
        self.interaction, self.options = interaction, options

    async def accept(self, slow: bool = False, text: str = "", posting: bool = False) -> None:
        if posting:
            check_may_post(self.interaction, self.options)
        if slow:
            await self.interaction.response.defer(thinking=True)

    async def answer(self, lines: list[str], private: bool = True) -> None:
        first, *rest = MESSAGES.pages(lines)
        if not self.interaction.response.is_done():
            await self.interaction.response.send_message(first, ephemeral=private, allowed_mentions=NO_PINGS)
        else:
            await self.interaction.edit_original_response(content=first, allowed_mentions=NO_PINGS)
        for page in rest:
            await self.interaction.followup.send(page, ephemeral=private, allowed_mentions=NO_PINGS)

    async def may_post(self) -> bool:
        try:
            check_may_post(self.interaction, self.options)
        except NotAllowed:
            return False
        return True


class Proverbs(commands.Cog):
    """The bot's commands and its reaction votes: each command is its flow (chatbot.frontends.flows)."""

    schedule = app_commands.Group(name="schedule", description="Post the top-voted of a daily batch here.",
                                  allowed_contexts=app_commands.AppCommandContext(guild=True))
    models = app_commands.Group(name="model", description="The trained runs this bot samples from.",
                                allowed_contexts=app_commands.AppCommandContext(guild=True))
    blocklist = app_commands.Group(name="blocklist", description="Words that drop candidates, at once (moderators).",
                                   allowed_contexts=app_commands.AppCommandContext(guild=True))

    def __init__(self, bot: DiscordBot) -> None:
        self.bot, self.core, self.options = bot, bot.core, bot.options

    def here(self, interaction: discord.Interaction) -> tuple[DiscordChannel, DiscordReply]:
        return (DiscordChannel(self.bot, context(interaction), interaction.followup),
                DiscordReply(interaction, self.options))

    async def run_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Autocomplete for a run: the trained runs of checkpoint_dir (none with an inference server)."""
        if self.core.runs is None:
            return []
        names = await asyncio.to_thread(list_runs, self.core.runs.checkpoint_dir)
        return [app_commands.Choice(name=name, value=name) for name in names
                if len(name) <= 100 and current.lower() in name.lower()][:25]

    @app_commands.command(description="Sample candidates from the model; vote for them with reactions.")
    @app_commands.describe(prefix="Text the candidates start with", temperature="Higher is wilder (default 0.7)",
                           count="How many candidates to show", length="At most this many tokens per candidate",
                           run="The trained run to sample from, this once (default: this channel's)")
    @app_commands.autocomplete(run=run_names)
    @app_commands.guild_only()
    async def proverb(self, interaction: discord.Interaction,
                      prefix: app_commands.Range[str, 1, MAX_PREFIX] | None = None,
                      temperature: app_commands.Range[float, *TEMPERATURE] | None = None,
                      count: app_commands.Range[int, *COUNT] | None = None,
                      length: app_commands.Range[int, *LENGTH] | None = None,
                      run: app_commands.Range[str, 1, 100] | None = None) -> None:
        await flows.ask(self.core, *self.here(interaction), prefix or "", temperature, count, length, run)

    @models.command(name="list", description="The trained runs (step, base, date); this channel's and loaded marked.")
    async def model_list(self, interaction: discord.Interaction) -> None:
        await flows.model_list(self.core, *self.here(interaction))

    @models.command(name="use", description="Sample from this run in this channel from now on.")
    @app_commands.describe(run="A trained run, as /model list shows it")
    @app_commands.autocomplete(run=run_names)
    async def model_use(self, interaction: discord.Interaction, run: app_commands.Range[str, 1, 100]) -> None:
        await flows.model_use(self.core, *self.here(interaction), run)

    @models.command(name="reload", description="Load a run's newest checkpoint now (default: this channel's run).")
    @app_commands.describe(run="A trained run (default: this channel's)")
    @app_commands.autocomplete(run=run_names)
    async def model_reload(self, interaction: discord.Interaction,
                           run: app_commands.Range[str, 1, 100] | None = None) -> None:
        await flows.model_reload(self.core, *self.here(interaction), run)

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
        await flows.votes(self.core, *self.here(interaction))

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
        await flows.post(self.core, *self.here(interaction), candidate, to)

    @post.autocomplete("candidate")
    async def candidates_of_latest_batch(self, interaction: discord.Interaction,
                                         current: str) -> list[app_commands.Choice[str]]:
        try:
            rows = await self.core.votes(context(interaction))
        except ProverbotError:
            return []
        choices = [app_commands.Choice(name=MESSAGES.fit(f"{number}. ({row.votes}) {row.text}", 100),
                                       value=str(number)) for number, row in enumerate(rows, 1)]
        return [choice for choice in choices if current.lower() in choice.name.lower()][:25]

    @app_commands.command(description="Delete a published post on its platform and mark it withdrawn.")
    @app_commands.describe(post="The post's number, e.g. #3 (/history lists them)")
    @app_commands.guild_only()
    async def unpost(self, interaction: discord.Interaction, post: app_commands.Range[str, 1, 24]) -> None:
        await flows.unpost(self.core, *self.here(interaction), post)

    # --- moderation -------------------------------------------------------------------------------------------

    @app_commands.command(description="Veto a candidate: it is never posted and its votes stop counting. Final.")
    @app_commands.describe(candidate="A candidate of the latest batch (its number), or #ID")
    @app_commands.guild_only()
    async def veto(self, interaction: discord.Interaction, candidate: app_commands.Range[str, 1, 20]) -> None:
        await flows.veto(self.core, *self.here(interaction), candidate)

    veto.autocomplete("candidate")(candidates_of_latest_batch)

    @blocklist.command(name="add", description="Drop candidates holding this word or phrase, from now on.")
    @app_commands.describe(word="A word or short phrase: letters, digits, spaces, hyphens, apostrophes; any case or "
                                "accents match")
    async def blocklist_add(self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD]) -> None:
        await flows.blocklist_add(self.core, *self.here(interaction), word)

    @blocklist.command(name="remove", description="Take a word or phrase off the blocklist.")
    @app_commands.describe(word="The word or phrase, as /blocklist show lists it")
    async def blocklist_remove(self, interaction: discord.Interaction,
                               word: app_commands.Range[str, 1, MAX_WORD]) -> None:
        await flows.blocklist_remove(self.core, *self.here(interaction), word)

    @blocklist.command(name="show", description="The blocked words, only to you.")
    async def blocklist_show(self, interaction: discord.Interaction) -> None:
        await flows.blocklist_show(self.core, *self.here(interaction))

    # --- history, status and schedules -----------------------------------------------------------------------

    @app_commands.command(description="The most recent posts, with links.")
    @app_commands.describe(n="How many posts to show")
    @app_commands.guild_only()
    async def history(self, interaction: discord.Interaction, n: app_commands.Range[int, 1, 50] = 10) -> None:
        await flows.history(self.core, *self.here(interaction), n)

    @app_commands.command(description="The model, the queue, recent posts and this channel's schedule.")
    @app_commands.guild_only()
    async def status(self, interaction: discord.Interaction) -> None:
        await flows.status(self.core, *self.here(interaction))

    @schedule.command(name="daily", description="Each day at this time: sample a batch here, then post the top-voted.")
    @app_commands.describe(time="HH:MM, 24-hour clock", timezone="A time zone such as Europe/Paris (default UTC)",
                           window="Minutes the batch stays open to votes (default 60)",
                           to="Where to post (default: this channel's or the bot's publisher)")
    @app_commands.autocomplete(to=publishers)
    async def schedule_daily(self, interaction: discord.Interaction, time: app_commands.Range[str, 1, 5],
                             timezone: app_commands.Range[str, 1, 64] = "UTC",
                             window: app_commands.Range[int, *WINDOW] = 60,
                             to: app_commands.Range[str, 1, 20] | None = None) -> None:
        await flows.schedule_daily(self.core, *self.here(interaction), time=time, timezone=timezone,
                                   window_minutes=window, publisher=to)

    @schedule_daily.autocomplete("timezone")
    async def timezones(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        names = sorted(name for name in zoneinfo.available_timezones() if current.lower() in name.lower())
        return [app_commands.Choice(name=name, value=name) for name in names[:25]]

    @schedule.command(name="show", description="This channel's daily schedule.")
    async def schedule_show(self, interaction: discord.Interaction) -> None:
        await flows.schedule_show(self.core, *self.here(interaction))

    @schedule.command(name="off", description="Stop this channel's daily posts.")
    async def schedule_off(self, interaction: discord.Interaction) -> None:
        await flows.schedule_off(self.core, *self.here(interaction))


class DiscordBot(DiscordClient):
    """The bot: the Proverbs cog, its errors told to the sender, and what the scheduler needs
    (chatbot.scheduler.Frontend)."""

    platform = PLATFORM

    def __init__(self, core: Core, options: DiscordOptions | None = None, **client_options) -> None:
        super().__init__(options or DiscordOptions(), **client_options)
        self.core = core
        self.vote_hint = vote_hint(self.options.vote_emoji)
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        await self.add_cog(Proverbs(self))
        await super().setup_hook()            # the commands synced

    async def on_app_command_error(self, interaction: discord.Interaction,
                                   error: app_commands.AppCommandError) -> None:
        """Every error goes to the sender in one line (privately when nothing was said yet); bugs are logged."""
        cause = getattr(error, "original", error)
        if isinstance(cause, app_commands.AppCommandError):      # a bad option type, a DM, a command too long, ...
            cause = BadRequest(str(cause))
        name = f"/{interaction.command.qualified_name}" if interaction.command else "a command"
        try:
            await flows.failed(DiscordReply(interaction, self.options), cause, name)
        except discord.HTTPException:
            log.warning("could not tell %s why %s failed: %s", interaction.user.id, name, cause)

    # --- chatbot.scheduler.Frontend (healthy: DiscordClient's) -----------------------------------------------

    def channel(self, ctx: Context) -> DiscordChannel:
        return DiscordChannel(self, ctx)
