"""The Discord front end through discord.py's own client code, against a fake of Discord on loopback
(tests/fakes/discord_api.py), with the session's tiny model in a real worker and a real SQLite log."""

import asyncio
import threading

import discord
import pytest

from chatbot.app import run_bot
from chatbot.config import ConfigError, load_settings
from chatbot.context import Context
from chatbot.core import Defaults
from chatbot.frontends.discord_bot import DiscordBot
from chatbot.frontends.discord_setup import MESSAGES, DiscordOptions, invite_url, quote
from chatbot.scheduler import Scheduler
from model.errors import ProverbotError
from model.worker import ModelWorker
from tests.fakes.discord_api import CHANNEL_ID, GUILD_ID, MANAGE_GUILD, POSTER_ROLE_ID, TOKEN, FakeDiscord, Focused
from tests.test_core import make_core
from tests.test_scheduler import START, FakeClock

pytestmark = pytest.mark.asyncio(loop_scope="session")     # the loop the bot and fake (session-scoped fixtures) run on

NO_PINGS = {"parse": []}


@pytest.fixture
def core(db, worker, sampler):
    return make_core(db, worker, sampler, defaults=Defaults(count=3, length=20, batch_size=8, temperature=1.0))


@pytest.fixture
async def fake():
    async with FakeDiscord() as fake:
        yield fake


async def start_bot(fake: FakeDiscord, core, guild_id: int | None = None) -> tuple[DiscordBot, asyncio.Task]:
    options = DiscordOptions(guild_id=guild_id, post_roles=("poster",), vote_emoji=("👍", "🔥"))
    bot = DiscordBot(core, options, guild_ready_timeout=0.05)
    await bot.login(TOKEN)
    task = asyncio.create_task(bot.connect())
    await asyncio.wait_for(bot.wait_until_ready(), 30)
    return bot, task


async def stop_bot(bot: DiscordBot, task: asyncio.Task) -> None:
    await bot.close()
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def bot(fake, core):
    bot, task = await start_bot(fake, core)
    yield bot
    await stop_bot(bot, task)


async def ask(fake: FakeDiscord, options: dict, member=None):
    interaction = await fake.command("proverb", options, member)
    await fake.until(lambda: interaction.answered)
    return interaction


async def proverb(fake: FakeDiscord, db, count: int = 3):
    """A /proverb with every candidate shown and its vote emoji added; skips when the model gave fewer than 2."""
    interaction = await ask(fake, {"count": count})
    candidates = (await db.latest_generation("discord", str(CHANNEL_ID))).candidates
    usable = [c for c in candidates if c.usable]
    if len(usable) < 2:
        pytest.skip("the tiny model gave fewer than two usable candidates")
    await fake.until(lambda: len(interaction.followups) == len(usable) and len(fake.reactions) == 2 * len(usable))
    return interaction, usable


# --- login and commands ----------------------------------------------------------------------------------------

async def test_commands_are_synced_with_their_ranges_and_descriptions(fake, bot):
    commands = {command["name"]: command for command in fake.synced}
    assert set(commands) == {"proverb", "votes", "post", "history", "status", "schedule", "unpost", "veto",
                             "blocklist", "model"}
    options = {option["name"]: option for option in commands["proverb"]["options"]}
    assert (options["temperature"]["min_value"], options["temperature"]["max_value"]) == (0.1, 2.0)
    assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, 10)
    assert (options["length"]["min_value"], options["length"]["max_value"]) == (1, 200)
    assert options["prefix"]["max_length"] == 200
    assert all(option["description"] and not option["required"] for option in options.values())
    assert all(command["contexts"] == [0] for command in fake.synced)           # servers only, no DMs
    daily = next(sub for sub in commands["schedule"]["options"] if sub["name"] == "daily")
    assert [option["name"] for option in daily["options"]] == ["time", "timezone", "window", "to"]
    assert bot.intents == discord.Intents(guilds=True, guild_reactions=True)     # nothing privileged


async def test_commands_sync_to_one_server_in_development(fake, core):
    bot, task = await start_bot(fake, core, guild_id=GUILD_ID)
    await stop_bot(bot, task)
    synced = [r.path for r in fake.requests if r.method == "PUT"]
    assert synced == [f"/applications/{bot.application_id}/guilds/{GUILD_ID}/commands"]
    assert {command["name"] for command in fake.synced} >= {"proverb", "post", "schedule"}


async def test_the_invite_link_asks_for_exactly_what_the_bot_needs():
    assert invite_url(1234) == ("https://discord.com/oauth2/authorize?client_id=1234&scope=bot+applications.commands"
                                "&permissions=68672")    # view channel, send messages, add reactions, read history


# --- /proverb --------------------------------------------------------------------------------------------------

async def test_proverb_defers_then_shows_each_candidate_with_its_vote_emoji(fake, bot, db):
    interaction = await ask(fake, {"prefix": "thou shalt", "temperature": 0.9, "count": 3})
    assert interaction.callbacks[0]["type"] == 5                     # deferred at once ("thinking...")
    generation = await db.latest_generation("discord", str(CHANNEL_ID))
    assert (generation.prefix, generation.temperature, generation.count) == ("thou shalt", 0.9, 3)
    usable = [c for c in generation.candidates if c.usable]
    summary = interaction.original["content"]
    assert summary.startswith("ada asked for “thou shalt”: [")
    assert f"generation #{generation.id}" in summary and "React with 👍 or 🔥 to vote" in summary
    await fake.until(lambda: len(interaction.followups) == len(usable) and len(fake.reactions) == 2 * len(usable))
    for number, (candidate, message) in enumerate(zip(usable, interaction.followups, strict=True), 1):
        assert message["content"] == f"{number}. [#{candidate.id}] {quote(candidate.text)}"
        assert message["allowed_mentions"] == NO_PINGS
        stored = await db.candidate_by_message("discord", message["id"])
        assert stored.id == candidate.id
    shown = [int(m["id"]) for m in interaction.followups]
    assert fake.reactions == [(m, e) for m in shown for e in ("👍", "🔥")]
    assert interaction.original["allowed_mentions"] == NO_PINGS


@pytest.mark.parametrize("options, message", [
    ({"temperature": 5.0}, "temperature must be a number from 0.1 to 2 (got 5.0)"),
    ({"count": 0}, "count must be a whole number from 1 to 10 (got 0)"),
    ({"length": 999}, "length must be a whole number from 1 to 200 (got 999)"),
    ({"prefix": "thou\u0007shalt"}, "control character (U+0007)"),
    ({"prefix": "x" * 201}, "at most 200 are allowed"),
])
async def test_bad_parameters_are_refused_privately_before_anything_runs(fake, bot, db, options, message):
    interaction = await ask(fake, options)                        # Discord clients can send values out of range
    assert interaction.callbacks[0]["type"] == 4 and interaction.ephemeral
    assert message in interaction.callbacks[0]["data"]["content"]
    assert await db.history("generations") == []


async def test_mentions_and_markdown_cannot_escape(fake, bot, db):
    interaction = await ask(fake, {"prefix": "@everyone **hi** <@&1100000000000000004>", "count": 2})
    await fake.until(lambda: interaction.followups)
    for message in [interaction.original, *interaction.followups]:
        assert message["allowed_mentions"] == NO_PINGS
        assert "@everyone" not in message["content"] and "@\u200beveryone" in message["content"]
        assert "<@&" not in message["content"] and "\\*\\*hi\\*\\*" in message["content"]


async def test_text_is_cut_and_paged_to_discords_limit_with_a_mark():
    assert quote("# @here [x](http://y) _a_") == "\\# @\u200bhere \\[x](http://y) \\_a\\_"
    assert MESSAGES.fit("short") == "short"
    cut = MESSAGES.fit("é" * 5000)
    assert len(cut) == MESSAGES.limit and cut.endswith(" … [trimmed]")
    assert not MESSAGES.fit("\\" * 2500).endswith("\\ … [trimmed]")  # never a dangling escape before the mark
    lines = [f"line {i} " + "x" * 300 for i in range(20)]
    packed = MESSAGES.pages(lines)
    assert all(len(page) <= MESSAGES.limit for page in packed) and len(packed) == 4
    assert "\n".join(packed) == "\n".join(lines)


# --- votes -----------------------------------------------------------------------------------------------------

async def votes_of(core) -> list[int]:
    return [row.votes for row in await core.votes(Context("discord", channel_id=str(CHANNEL_ID)))]


async def test_reactions_are_votes_bots_do_not_count_and_clears_withdraw(fake, bot, db, core):
    interaction, usable = await proverb(fake, db)
    first, second = (int(m["id"]) for m in interaction.followups[:2])
    ada, bob = fake.member("ada"), fake.member("bob")
    other_bot = fake.member("otherbot", bot=True)
    itself = fake.member("proverbot", user_id=bot.user.id, bot=True)
    await fake.react("MESSAGE_REACTION_ADD", second, "👍", ada)
    await fake.react("MESSAGE_REACTION_ADD", second, "👍", bob)
    await fake.react("MESSAGE_REACTION_ADD", second, "🔥", bob)
    await fake.react("MESSAGE_REACTION_ADD", first, "👍", other_bot)          # bots don't count
    await fake.react("MESSAGE_REACTION_ADD", first, "👍", itself)             # nor the bot's own
    await fake.react("MESSAGE_REACTION_ADD", first, "😀", ada)                # not a vote emoji
    await fake.react("MESSAGE_REACTION_ADD", 12345678901234567890, "👍", ada)  # a message that shows no candidate
    expected = [0, 3] + [0] * (len(usable) - 2)
    await until_votes(core, expected)
    await fake.react("MESSAGE_REACTION_REMOVE", second, "👍", bob)
    await until_votes(core, [0, 2] + [0] * (len(usable) - 2))
    await fake.react("MESSAGE_REACTION_REMOVE_EMOJI", second, "🔥")
    await until_votes(core, [0, 1] + [0] * (len(usable) - 2))
    await fake.react("MESSAGE_REACTION_ADD", first, "👍", bob)
    await fake.react("MESSAGE_REACTION_REMOVE_ALL", second, "👍")
    await until_votes(core, [1, 0] + [0] * (len(usable) - 2))


async def until_votes(core, expected: list[int], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while await votes_of(core) != expected:
            await asyncio.sleep(0.02)


async def test_votes_on_messages_from_before_a_restart_still_count(fake, core, db):
    bot, task = await start_bot(fake, core)
    interaction, usable = await proverb(fake, db)
    await stop_bot(bot, task)
    bot, task = await start_bot(fake, core)                           # a new process would do the same
    try:
        await fake.react("MESSAGE_REACTION_ADD", int(interaction.followups[1]["id"]), "🔥", fake.member("ada"))
        await until_votes(core, [0, 1] + [0] * (len(usable) - 2))
    finally:
        await stop_bot(bot, task)


# --- /post -----------------------------------------------------------------------------------------------------

async def test_post_needs_the_role_or_permission(fake, bot, db):
    await proverb(fake, db)
    refused = await fake.command("post", member=fake.member("eve"))
    await fake.until(lambda: refused.answered)
    assert refused.ephemeral
    assert refused.callbacks[0]["data"]["content"] == ("Sorry: Posting and schedules need the manage guild "
                                                      "permission or the role poster.")
    by_role = await fake.command("post", member=fake.member("ada", roles=(POSTER_ROLE_ID,)))
    await fake.until(lambda: by_role.answered)
    assert by_role.original["content"].startswith("Posted [#")
    assert len(await db.history("posts")) == 1


async def test_post_publishes_the_top_voted_then_refuses_it_twice(fake, bot, db, core):
    interaction, usable = await proverb(fake, db)
    await fake.react("MESSAGE_REACTION_ADD", int(interaction.followups[1]["id"]), "👍", fake.member("bob"))
    await until_votes(core, [0, 1] + [0] * (len(usable) - 2))
    admin = fake.member("ada", permissions=MANAGE_GUILD)
    posted = await fake.command("post", member=admin)
    await fake.until(lambda: posted.answered)
    assert posted.callbacks[0]["type"] == 5
    content = posted.original["content"]
    assert content.startswith(f"Posted [#{usable[1].id}] on dryrun: https://dry-run.invalid/posts/")
    again = await fake.command("post", {"candidate": "2"}, member=admin)
    await fake.until(lambda: again.answered)
    assert again.original["content"].startswith("Sorry: already posted: https://dry-run.invalid/posts/")
    first = await fake.command("post", {"candidate": "1"}, member=admin)
    await fake.until(lambda: first.answered)
    assert first.original["content"].startswith(f"Posted [#{usable[0].id}] on dryrun:")
    bad = await fake.command("post", {"candidate": "first"}, member=admin)
    nowhere = await fake.command("post", {"candidate": "3", "to": "myspace"}, member=admin)
    await fake.until(lambda: bad.answered and nowhere.answered)
    assert bad.ephemeral and "'first' is not a candidate" in bad.callbacks[0]["data"]["content"]
    assert nowhere.ephemeral and nowhere.callbacks[0]["data"]["content"].startswith(
        "Sorry: Cannot post there: 'myspace' is not one of x, mastodon, bluesky, dryrun.")


async def test_post_autocompletes_the_latest_batch(fake, bot, db):
    _, usable = await proverb(fake, db)
    complete = await fake.command("post", {"candidate": Focused("")}, kind=4)
    await fake.until(lambda: complete.callbacks)
    assert complete.callbacks[0]["type"] == 8
    choices = complete.callbacks[0]["data"]["choices"]
    assert [choice["value"] for choice in choices] == [str(n) for n in range(1, len(usable) + 1)]
    assert choices[0]["name"].startswith(f"1. (0) {usable[0].text[:20]}")
    assert all(len(choice["name"]) <= 100 for choice in choices)


# --- history, status, schedules --------------------------------------------------------------------------------

async def test_history_and_status_answer_privately(fake, bot, db):
    await proverb(fake, db)
    posted = await fake.command("post", member=fake.member("ada", permissions=MANAGE_GUILD))
    await fake.until(lambda: posted.answered)
    history = await fake.command("history", {"n": 5})
    status = await fake.command("status")
    await fake.until(lambda: history.answered and status.answered)
    assert history.ephemeral and status.ephemeral
    assert history.callbacks[0]["data"]["content"].startswith("post #1 posted on dryrun ")
    assert "queue: 0 waiting; posts in the last 24 h: dryrun 1." in status.callbacks[0]["data"]["content"]
    assert status.callbacks[0]["data"]["content"].endswith("No schedule here.")


async def test_schedule_commands(fake, bot, db):
    admin = fake.member("ada", permissions=MANAGE_GUILD)
    said = []
    for member, sub, options in [(fake.member("eve"), "daily", {"time": "09:30"}),
                                 (admin, "daily", {"time": "09:30", "timezone": "Europe/Paris", "window": 10}),
                                 (admin, "daily", {"time": "25:00"}),
                                 (fake.member("eve"), "show", {}),
                                 (admin, "off", {})]:
        interaction = await fake.command("schedule", options, member, subcommand=sub)
        await fake.until(lambda interaction=interaction: interaction.answered)
        said.append((interaction.ephemeral, interaction.callbacks[0]["data"]["content"]))
    assert said[0] == (True, "Sorry: Posting and schedules need the manage guild permission or the role poster.")
    assert said[1][0] is False and said[1][1].startswith("Daily at 09:30 Europe/Paris, voting open 10 min; next run")
    assert said[2][0] is True and said[2][1].startswith("Sorry: Time of day '25:00' is not HH:MM")
    assert said[3] == (True, said[1][1])
    assert said[4] == (False, "Schedule off.")
    complete = await fake.command("schedule", {"time": "09:30", "timezone": Focused("paris")}, admin,
                                  subcommand="daily", kind=4)
    await fake.until(lambda: complete.callbacks)
    assert [c["value"] for c in complete.callbacks[0]["data"]["choices"]] == ["Europe/Paris"]
    to = await fake.command("schedule", {"time": "09:30", "to": Focused("")}, admin, subcommand="daily", kind=4)
    await fake.until(lambda: to.callbacks)
    assert [c["value"] for c in to.callbacks[0]["data"]["choices"]] == ["dryrun"]
    there = await fake.command("schedule", {"time": "09:30", "to": "dryrun"}, admin, subcommand="daily")
    await fake.until(lambda: there.answered)
    assert there.callbacks[0]["data"]["content"].startswith(
        "Daily at 09:30 UTC, voting open 60 min, posting on dryrun;")


async def test_a_scheduled_run_shows_its_batch_in_the_channel_and_posts_the_winner(fake, bot, db, core):
    clock = FakeClock(START)
    await core.set_schedule(Context("discord", channel_id=str(CHANNEL_ID)), "09:00", window_minutes=5, at=START)
    clock.advance(hours=1)
    tasks = await Scheduler(core, db, [bot], clock).run_due()
    await clock.sleeping(1)
    generation = await db.latest_generation("discord", str(CHANNEL_ID))
    usable = [c for c in generation.candidates if c.usable]
    sent = [r.body for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
    assert sent[0]["content"].startswith("Scheduled post: voting closes in 5 min; nobody votes: 1 is posted.\n[")
    shown = [f"{n}. [#{c.id}] {quote(c.text)}" for n, c in enumerate(usable, 1)]
    assert [body["content"] for body in sent[1:]] == shown
    assert all(body["allowed_mentions"] == NO_PINGS for body in sent)
    if len(usable) >= 2:
        message = next(m for m in fake.messages.values() if m["content"].startswith("2. [#"))
        await fake.react("MESSAGE_REACTION_ADD", int(message["id"]), "👍", fake.member("bob"))
        await until_votes(core, [0, 1] + [0] * (len(usable) - 2))
    clock.advance(minutes=5)
    await asyncio.gather(*tasks)
    winner = usable[1] if len(usable) >= 2 else usable[0]
    last = [r.body for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"][-1]
    assert last["content"].startswith(f"Scheduled post: Posted [#{winner.id}] on dryrun: https://")


# --- proverbot run ---------------------------------------------------------------------------------------------

@pytest.fixture
def bot_settings(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVERBOT_CHECKPOINT_DIR", str(trained_run.parent))
    monkeypatch.setenv("PROVERBOT_HEALTH_FILE", str(tmp_path / "proverbot.health"))
    monkeypatch.setenv("PROVERBOT_DEVICE", "cpu")
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    return load_settings()


async def test_run_serves_discord_when_a_token_is_set_and_stops_cleanly(fake, bot_settings, db):
    task = asyncio.create_task(run_bot(bot_settings))
    await fake.until(lambda: fake.identified.is_set() and fake.synced)
    interaction = await ask(fake, {"count": 2})
    assert interaction.original["content"].startswith("ada asked: [")
    assert bot_settings.health_file.exists()                       # the heartbeat is written from the start
    task.cancel()                                                  # what SIGTERM does, while candidates are sent
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    generation = (await db.history("generations"))[0]
    assert generation.status == "ok"
    shown = [c for c in (await db.get_generation(generation.id)).candidates if c.usable]
    assert len(interaction.followups) == len(shown)               # the command in flight finished first
    assert all(c.message_id for c in shown)


async def test_a_refused_token_ends_run_with_a_clear_error(fake, bot_settings, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "not-the-token")
    with pytest.raises(ProverbotError, match=r"Discord refused DISCORD_TOKEN \(401\)") as refused:
        await asyncio.wait_for(run_bot(load_settings()), 60)
    assert "not-the-token" not in str(refused.value)


@pytest.mark.parametrize("settings, message", [
    ({"discord_post_permission": "post_things"}, "'post_things' is not a Discord permission"),
    ({"discord_vote_emoji": [" "]}, "discord_vote_emoji needs at least one emoji"),
])
async def test_bad_discord_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        DiscordOptions.from_settings(load_settings(**settings))


class GatedSampler:
    """The real sampler behind a gate the test opens: requests pile up in the worker's queue meanwhile."""

    def __init__(self, sampler) -> None:
        self.sampler, self.gate, self.started = sampler, threading.Event(), threading.Event()

    def candidates(self, request):
        self.started.set()
        self.gate.wait(60)
        return self.sampler.candidates(request)


async def test_a_waiting_request_shows_its_place_and_a_full_queue_says_busy(fake, db, sampler):
    gated = GatedSampler(sampler)
    async with ModelWorker(lambda: gated, max_queue=1) as worker:
        bot, task = await start_bot(fake, make_core(db, worker, sampler))
        try:
            running = await fake.command("proverb", {"count": 1})
            await asyncio.to_thread(gated.started.wait, 30)
            waiting = await fake.command("proverb", {"count": 1})
            await fake.until(lambda: waiting.original and waiting.original["content"])
            assert waiting.original["content"] == "Waiting for the model: #1 in the queue."
            refused = await fake.command("proverb", {"count": 1})
            await fake.until(lambda: refused.answered)
            assert refused.original["content"] == ("Sorry: The model is busy (1 requests waiting); try again "
                                                   "shortly.")
            gated.gate.set()
            await fake.until(lambda: running.followups and waiting.followups)
            assert waiting.original["content"].startswith("ada asked: [")
        finally:
            gated.gate.set()
            await stop_bot(bot, task)
