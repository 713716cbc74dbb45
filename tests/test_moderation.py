"""Issue 15.1-2: limits per member, /veto and /blocklist, through the real front ends (the console, and discord.py and
slack-bolt against their loopback fakes) with the session's tiny model in a real worker and a real SQLite log."""

import asyncio
import io
import os
import re

import pytest

from chatbot.config import load_settings
from chatbot.context import Context
from chatbot.core import Core, Defaults, ModelInfo
from chatbot.frontends.console import Console
from chatbot.limits import Limits
from chatbot.publishers.dryrun import DryRunPublisher
from chatbot.scheduler import Scheduler
from model.candidates import SampleRequest
from model.filters import CandidateFilter, blocked_pattern
from model.remote import Server, open_remote
from storage import Database
from tests.fakes.discord_api import CHANNEL_ID, MANAGE_GUILD, FakeDiscord
from tests.fakes.slack_api import fake_slack
from tests.test_discord import start_bot, stop_bot
from tests.test_remote_sampler import answering
from tests.test_scheduler import START, Announcements, FakeClock
from tests.test_slack import command, make_bot

session_loop = pytest.mark.asyncio(loop_scope="session")   # the loop the bots and fakes run on, as in their tests

DEFAULTS = Defaults(count=3, length=20, batch_size=8, temperature=1.0)


def make_core(db, worker, sampler, limits: Limits | None = None) -> Core:
    return Core(db, worker, DryRunPublisher(), ModelInfo.of(sampler), DEFAULTS, limits=limits)


async def open_log() -> Database:
    db = Database(os.environ["PROVERBOT_DATABASE_URL"])
    await db.start()
    return db


class Typed:
    """A console session driven line by line: say() returns what one line printed."""

    def __init__(self, core: Core) -> None:
        self.out = io.StringIO()
        self.console = Console(core, io.StringIO(), self.out, user="ada")
        self.ctx = self.console.terminal.ctx

    async def say(self, line: str) -> str:
        start = len(self.out.getvalue())
        await self.console.handle(line)
        return self.out.getvalue()[start:].strip()


# --- matching blocked words --------------------------------------------------------------------------------------

@pytest.mark.parametrize("word, text, blocked", [
    ("creme", "La CRÈME brûlée.", True),              # accents and case of the text
    ("Crème", "a creme tart", True),                  # ... and of the word
    ("CRÉME", "crème", True),
    ("naïve", "a NAIVE plan", True),
    ("straße", "down the STRASSE", True),             # case folding, not just lower()
    ("son of a gun", "Son  of\na GUN!", True),        # a phrase: any spacing
    ("ass", "What an ass.", True),
    ("ass", "a class act", False),                    # whole words only
    ("ass", "assess the grass", False),
    ("darn", "darned socks", False),
    ("darn", "darn-it", True),                        # a hyphen ends a word
    ("œuvre", "une oeuvre", False),                   # a ligature is not its letters
])
def test_blocked_words_match_whole_words_any_case_or_accents(word, text, blocked):
    from_config = CandidateFilter([], blocked_words=[word])
    from_log = CandidateFilter([])
    for verdict in (from_config.check(text), from_log.check(text, (), blocked_pattern(frozenset({word})))):
        assert (verdict.reason == "blocked_word") is blocked, (word, text)


def test_a_remote_sampler_drops_the_requests_blocked_words(trained_run):
    completion = b'{"choices": [{"text": " early bird sings"}], "usage": {"completion_tokens": 4}}'
    with answering(200, completion) as url:             # an OpenAI-compatible server, always the same text
        remote = open_remote(Server(url, "tiny"), trained_run)
        blocked = remote.candidates(SampleRequest(prefix="the", count=1, length=5, blocked_words=("Éarly",)))
        kept = remote.candidates(SampleRequest(prefix="the", count=1, length=5))
    assert not blocked.usable and {c.verdict.detail for c in blocked.rejected} == {'contains blocked word "early"'}
    assert [c.text for c in kept.usable] == ["the early bird sings"]


# --- /blocklist --------------------------------------------------------------------------------------------------

def assert_blocked(candidates) -> None:
    """Every sample was dropped, for the blocked word unless an earlier rule (a control character) came first."""
    assert candidates and not any(c.usable for c in candidates)
    assert {c.detail for c in candidates if c.reason == "blocked_word"} == {'contains blocked word "thou"'}
    assert {c.reason for c in candidates} <= {"blocked_word", "control_character", "empty"}


@session_loop
async def test_a_blocklisted_word_stops_candidates_at_once_and_survives_a_restart(worker, sampler):
    db = await open_log()
    try:
        typed = Typed(make_core(db, worker, sampler))
        assert (await typed.say("/blocklist add THÓU")).startswith("Blocked “THÓU”: candidates holding it")
        assert await typed.say("/blocklist add thou") == "“thou” is already on the blocklist."
        said = await typed.say('/proverb prefix:"thou shalt" count:2')
        assert "0 candidates (only 0 of 2 wanted)" in said and "blocked word" in said
        assert_blocked((await db.latest_generation("console", typed.ctx.channel_id)).candidates)
    finally:
        await db.close()
    db = await open_log()                                  # a restart: a new log object, core and console
    try:
        typed = Typed(make_core(db, worker, sampler))
        assert (await typed.say("/blocklist show")).splitlines()[1].startswith("“THÓU” (by ada, ")
        await typed.say('/proverb prefix:"thou shalt" count:2')
        assert_blocked((await db.latest_generation("console", typed.ctx.channel_id)).candidates)
        assert await typed.say("/blocklist remove Thou") == "Took “THÓU” off the blocklist."
        assert (await typed.say("/blocklist remove thou")).startswith("“thou” is not on the blocklist")
        await typed.say('/proverb prefix:"thou shalt" count:2')
        kept = (await db.latest_generation("console", typed.ctx.channel_id)).candidates
        assert "blocked_word" not in {c.reason for c in kept}
        assert [(e.action, e.actor_name, e.detail) for e in await db.history("moderation")] == [
            ("blocklist.remove", "ada", "THÓU"), ("blocklist.add", "ada", "THÓU")]
        assert await db.history("blocklist") == []
    finally:
        await db.close()


# --- /veto -------------------------------------------------------------------------------------------------------

@session_loop
async def test_a_vetoed_top_voted_candidate_is_never_posted(db, worker, sampler):
    core = make_core(db, worker, sampler)
    typed = Typed(core)
    await typed.say("/proverb count:3")
    usable = [c for c in (await db.latest_generation("console", typed.ctx.channel_id)).candidates if c.usable]
    if len(usable) < 2:
        pytest.skip("the tiny model gave fewer than two usable candidates")
    bob = Context("console", channel_id=typed.ctx.channel_id, user_id="bob", user_name="bob")
    await core.vote(bob, usable[1].id)
    assert (await typed.say("/veto 2")).startswith(f"Vetoed 2 [#{usable[1].id}] by ada: it will never be posted")
    assert (await typed.say("/votes")).splitlines()[1] == f"2. [#{usable[1].id}] vetoed: {usable[1].text}"
    assert (await typed.say("/vote 2")).startswith(f"Sorry: Candidate #{usable[1].id} was vetoed by ada (")
    assert (await typed.say("/post 2")).endswith("and can never be posted.")
    assert (await typed.say("/post")).startswith(f"Posted [#{usable[0].id}] on dryrun:")   # not the top-voted
    assert re.fullmatch(rf"Sorry: Candidate #{usable[1].id} was already vetoed by ada \(.* UTC\): a veto is final\.",
                        await typed.say("/veto 2"))
    assert await typed.say("/veto 1") == (f"Sorry: Candidate #{usable[0].id} is already posted on dryrun (post #1): a "
                                          "veto cannot take it back; /unpost #1 withdraws it.")
    assert [p.candidate_id for p in await db.history("posts")] == [usable[0].id]
    entry = (await db.history("moderation"))[0]
    assert (entry.action, entry.actor_name, entry.target) == ("candidate.veto", "ada", f"candidate #{usable[1].id}")
    vetoed = next(c for c in await db.history("candidates") if c.id == usable[1].id)
    assert vetoed.vetoed_by_name == "ada" and vetoed.vetoed_at is not None


@session_loop
async def test_the_schedule_skips_a_vetoed_top_voted_candidate(db, worker, sampler):
    core, clock, said = make_core(db, worker, sampler), FakeClock(START), Announcements()
    here = Context("test", channel_id="c1", user_id="mod", user_name="mod")
    await core.set_schedule(here, "09:00", window_minutes=10, at=START)
    clock.advance(hours=1)
    tasks = await Scheduler(core, db, [said], clock).run_due()
    await clock.sleeping(1)
    usable = [c for c in (await db.latest_generation("test", "c1")).candidates if c.usable]
    if len(usable) < 2:
        pytest.skip("the tiny model gave fewer than two usable candidates")
    await core.vote(Context("test", channel_id="c1", user_id="bob"), usable[0].id)
    await core.veto(here, usable[0].id)                   # the top-voted, and the first: both picks are skipped
    clock.advance(minutes=10)
    await asyncio.gather(*tasks)
    assert [p.candidate_id for p in await db.history("posts")] == [usable[1].id]
    assert f"Posted [#{usable[1].id}]" in said.texts()[-1]


# --- limits per member -------------------------------------------------------------------------------------------

@pytest.fixture
async def discord_fake():
    async with FakeDiscord() as fake:
        yield fake


async def discord_proverb(fake: FakeDiscord, member: dict):
    interaction = await fake.command("proverb", {"count": 1}, member)
    await fake.until(lambda: interaction.answered)
    return interaction


@session_loop
async def test_a_second_proverb_within_the_cooldown_is_refused_privately_and_costs_nothing(discord_fake, db, worker,
                                                                                         sampler):
    bot, task = await start_bot(discord_fake, make_core(db, worker, sampler, Limits(cooldown=90)))
    try:
        eve = discord_fake.member("eve")
        first = await discord_proverb(discord_fake, eve)
        assert first.original["content"].startswith("eve asked: [")
        asked = len(await db.history("generations"))
        again = await discord_proverb(discord_fake, eve)
        assert again.callbacks[0]["type"] == 4 and again.ephemeral              # not deferred: refused at once
        assert re.fullmatch(r"Sorry: You asked here \d+ s ago; one request every 90 s: try again in \d+ s\.",
                            again.callbacks[0]["data"]["content"])
        assert len(await db.history("generations")) == asked                     # nothing sampled, nothing logged
        moderator = discord_fake.member("mod", permissions=MANAGE_GUILD)
        for _ in range(2):
            assert (await discord_proverb(discord_fake, moderator)).original["content"].startswith("mod asked: [")
        assert len(await db.history("generations")) == asked + 2
    finally:
        await stop_bot(bot, task)


@session_loop
async def test_the_hourly_cap_is_told_in_slacks_private_acknowledgement(monkeypatch, db, worker, sampler):
    async with fake_slack(monkeypatch) as fake:
        bot = make_bot(make_core(db, worker, sampler, Limits(hourly=4)))
        await command(fake, bot, "/proverb", "count:3", user="U0EVE")
        _, (_, ack) = await command(fake, bot, "/proverb", "count:3", user="U0EVE")
        assert ack == {"response_type": "ephemeral", "mrkdwn": False, "text": "Sorry: You asked for 3 of your 4 "
                       "candidates this hour: try again in 60 min (or ask for count:1)."}
        _, (_, ack) = await command(fake, bot, "/proverb", "count:5", user="U0EVE")
        assert ack["text"] == ("Sorry: count:5 is more than the 4 candidates a member may ask for in an hour: ask for "
                               "fewer.")
        assert len(await db.history("generations")) == 1
        for _ in range(2):                                      # U0ADA may post: a moderator, exempt
            await command(fake, bot, "/proverb", "count:3", user="U0ADA")
        assert len(await db.history("generations")) == 3


@session_loop
async def test_only_moderators_block_on_slack(monkeypatch, db, worker, sampler):
    async with fake_slack(monkeypatch) as fake:
        bot = make_bot(make_core(db, worker, sampler))
        said = []
        for user, text in [("U0EVE", "add darn"), ("U0EVE", "show"), ("U0ADA", "add Darn"), ("U0ADA", "show")]:
            body, _ = await command(fake, bot, "/blocklist", text, user=user)
            answer, = fake.answers(body)
            said.append((answer["response_type"], answer["text"]))
    refused = ("ephemeral", "Sorry: Posting and schedules are for workspace admins or the users in slack_post_users or "
                            "members of S0POSTERS.")
    assert said[:2] == [refused] * 2
    assert said[2] == ("ephemeral", "Blocked “Darn”: candidates holding it (any case or accents) are dropped from "
                                    "now on.")
    assert said[3][0] == "ephemeral" and said[3][1].splitlines()[1].startswith("“Darn” (by ada, ")
    assert [w.word for w in await db.blocked_words()] == ["Darn"]


def test_the_limits_are_settings(monkeypatch):
    monkeypatch.setenv("PROVERBOT_USER_COOLDOWN", "42")
    monkeypatch.setenv("PROVERBOT_USER_HOURLY_CANDIDATES", "0")
    settings = load_settings()
    assert (settings.user_cooldown, settings.user_hourly_candidates) == (42, 0)


# --- who may moderate on Discord ---------------------------------------------------------------------------------

@session_loop
async def test_only_moderators_veto_and_block_on_discord(discord_fake, db, worker, sampler):
    bot, task = await start_bot(discord_fake, make_core(db, worker, sampler))
    try:
        eve, mod = discord_fake.member("eve"), discord_fake.member("mod", permissions=MANAGE_GUILD)
        await discord_proverb(discord_fake, eve)
        if not [c for c in (await db.latest_generation("discord", str(CHANNEL_ID))).candidates if c.usable]:
            pytest.skip("the tiny model gave no usable candidate")
        said = []
        for member, name, options, sub in [(eve, "veto", {"candidate": "1"}, None),
                                           (eve, "blocklist", {"word": "darn"}, "add"),
                                           (eve, "blocklist", {}, "show"),
                                           (mod, "blocklist", {"word": "Dárn"}, "add"),
                                           (mod, "blocklist", {}, "show"),
                                           (mod, "blocklist", {"word": "<@&1100000000000000004>"}, "add"),
                                           (mod, "veto", {"candidate": "1"}, None)]:
            interaction = await discord_fake.command(name, options, member, subcommand=sub)
            await discord_fake.until(lambda interaction=interaction: interaction.answered)
            said.append((interaction.ephemeral, interaction.callbacks[0]["data"]["content"]))
        refused = (True, "Sorry: Posting and schedules need the manage guild permission or the role poster.")
        assert said[:3] == [refused] * 3
        assert said[3] == (True, "Blocked “Dárn”: candidates holding it (any case or accents) are dropped from now on.")
        assert said[4][0] is True and said[4][1].startswith("Blocked words (1; the config file's blocked_words apply "
                                                            "too):\n“Dárn” (by mod, ")
        assert said[5] == (True, "Sorry: A blocked word holds letters, digits, spaces, hyphens and apostrophes only, "
                                 "not '<' (U+003C).")
        assert said[6][0] is False and said[6][1].startswith("Vetoed 1 [#")
        assert [e.action for e in await db.history("moderation")] == ["candidate.veto", "blocklist.add"]
    finally:
        await stop_bot(bot, task)
