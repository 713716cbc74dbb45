"""Hostile chat input, table-driven: each row is a line typed in the real console (or a command sent through
Slack's or Discord's real dispatch, against their loopback fakes), the one line the sender gets back, and nothing
written to the log. Rows name candidates by role: {mine} (shown in this channel), {rejected} and {empty} (filtered
out of this channel's batch), {other} (another console session's), {discord} (a Discord channel's).

Future findings join the tables."""

import io
import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime

import pytest

from chatbot.frontends.common import MAX_COMMAND
from chatbot.frontends.console import Console
from chatbot.frontends.flows import BLOCKLIST_USAGE
from storage import NewCandidate
from tests.fakes.discord_api import CHANNEL_ID, MANAGE_GUILD, FakeDiscord
from tests.fakes.slack_api import CHANNEL, fake_slack
from tests.test_core import make_core
from tests.test_discord import start_bot, stop_bot
from tests.test_slack import command, make_bot

pytestmark = pytest.mark.asyncio(loop_scope="session")     # the loop the bots and fakes run on, as in their tests

MEGABYTE = 1_048_576
TOO_LONG = f"Sorry: That command is {MEGABYTE:,} characters long; at most {MAX_COMMAND:,} are read."
NOT_A_NUMBER = "is not a candidate number: give e.g. 1 (latest batch) or #12 (storage id)."
UNKNOWN_ZONE = ("Time zone '../../etc/passwd' is unknown: use an IANA name such as Europe/Paris, America/New_York or "
                "UTC.")
ASKED_FOR_EVERYONE = "ada asked for “@\u200beveryone"
VETOED_AT = "2030-01-01 00:00 UTC"
WHICH_WORD = "Which word? Give one, e.g. /blocklist add darn (a short phrase works too)."
NOT_A_WORD = "A blocked word holds letters, digits, spaces, hyphens and apostrophes only,"
AT_MOST_50 = "a blocked word or phrase has at most 50."


def not_here(named: str) -> str:
    return f"Sorry: No such candidate here: #{named} was not shown in this channel."


CONSOLE = [
    # issue 18 #4: another console's batch, another platform's, ids no row can have
    ("/vote #{other}", not_here("{other}")),
    ("/post #{other}", not_here("{other}")),
    ("/unvote #{other}", not_here("{other}")),
    ("/unvote #{mine}", "You had no vote on #{mine} [#{mine}]."),          # this channel's: taken
    ("/post #{discord}", not_here("{discord}")),
    ("/vote #99999999999999999999999999", not_here("99999999999999999999999999")),
    ("/post #99999999999999999999999", not_here("99999999999999999999999")),
    ("/post #0", not_here("0")),
    # issue 18 #11: a command too long to read, refused before parsing
    ("/proverb prefix:" + "x" * (MEGABYTE - 16), TOO_LONG),
    ('/proverb prefix:"' + "x" * (MEGABYTE - 17), TOO_LONG),
    # candidates filtered out of this channel's batch: refused by the log, whichever way they are named
    ("/post #{rejected}", "Sorry: Candidate #{rejected} was filtered out (blocked word) and cannot be posted."),
    ("/post #{empty}", "Sorry: Candidate #{empty} was filtered out (empty) and cannot be posted."),
    ("/vote #{rejected}", "Sorry: Candidate #{rejected} was filtered out (blocked word) and cannot be voted for."),
    # bad numbers
    ("/vote 99999999999999999999", ("Sorry: There is no candidate 99999999999999999999 in the latest batch (it has 1 "
                                    "to 1).")),
    ("/vote 0", "Sorry: There is no candidate 0 in the latest batch (it has 1 to 1)."),
    ("/vote -1", f"Sorry: '-1' {NOT_A_NUMBER}"),
    ("/vote ²", f"Sorry: '²' {NOT_A_NUMBER}"),                       # a digit to str.isdigit, not to int()
    ("/vote ١", f"Sorry: '١' {NOT_A_NUMBER}"),                       # an Arabic-Indic one
    ("/vote #", f"Sorry: '#' {NOT_A_NUMBER}"),
    ("/vote 1 2", "Sorry: Give one candidate: its number in the latest batch, or #ID."),
    ("/proverb count:1e999", "Sorry: count must be a whole number from 1 to 10 (got 1e999)."),
    ("/proverb temperature:nan", "Sorry: temperature must be a number from 0.1 to 2 (got nan)."),
    ("/proverb count:0x10", "Sorry: count must be a number from 1 to 10 (got '0x10')."),
    ("/history 99999999999999999999999", "Sorry: n must be a whole number from 1 to 50 (got 99999999999999999999999)."),
    ("/schedule daily time:09:30 window:1e308", "Sorry: window must be a whole number from 1 to 1440 (got 1e308)."),
    # odd text: unclosed quotes, control characters, lookalikes, unknown commands
    ('/proverb prefix:"unclosed', "Sorry: Cannot read that command: No closing quotation."),
    ("/proverb prefix:'thou shalt", "Sorry: Cannot read that command: No closing quotation."),
    ('/proverb prefix:"\x1b[2Jthou shalt"', "Sorry: The prefix contains a control character (U+001B); use plain text."),
    ("/\x1b[2J", "Sorry: Unknown command '/\\x1b[2j'; /help lists the commands."),
    ("\x00", "Sorry: Unknown command '\\x00'; /help lists the commands."),
    ("/ｐｒｏｖｅｒｂ", "Sorry: Unknown command '/ｐｒｏｖｅｒｂ'; /help lists the commands."),
    ("/proverb prefix:" + "é" * 201, "Sorry: The prefix is 201 characters long; at most 200 are allowed."),
    ("/schedule daily time:09:30 timezone:../../etc/passwd", f"Sorry: {UNKNOWN_ZONE}"),
    ("/votes please", "Sorry: /votes takes no arguments."),
    ("/vote" + " " * 900, "Sorry: Which candidate? Give its number in the latest batch, e.g. /vote 1."),
    # issue 15: /veto and /blocklist (the console's user is the operator, a moderator)
    ("/veto 7", "Sorry: There is no candidate 7 in the latest batch (it has 1 to 1)."),
    ("/veto #{other}", not_here("{other}")),
    ("/veto #{vetoed}", f"Sorry: Candidate #{{vetoed}} was already vetoed by mod ({VETOED_AT}): a veto is final."),
    ("/veto #{posted}", ("Sorry: Candidate #{posted} is already posted on dryrun (post #{post}): a veto cannot take it "
                         "back; /unpost #{post} withdraws it.")),
    ("/veto #{rejected}", "Sorry: Candidate #{rejected} was filtered out (blocked word): it cannot be posted anyway."),
    ("/vote #{vetoed}", f"Sorry: Candidate #{{vetoed}} was vetoed by mod ({VETOED_AT}) and can never be voted for."),
    ("/post #{vetoed}", f"Sorry: Candidate #{{vetoed}} was vetoed by mod ({VETOED_AT}) and can never be posted."),
    ("/veto", "Sorry: Which candidate? Give its number in the latest batch, e.g. /veto 1."),
    ("/veto 1 2", "Sorry: Give one candidate: its number in the latest batch, or #ID."),
    ("/blocklist add", f"Sorry: {WHICH_WORD}"),
    ("/blocklist add '   '", f"Sorry: {WHICH_WORD}"),
    ("/blocklist remove", f"Sorry: {WHICH_WORD}"),
    ("/blocklist add " + "x" * 51, f"Sorry: That word is 51 characters long; {AT_MOST_50}"),
    ("/blocklist add " + "é" * 900, f"Sorry: That word is 900 characters long; {AT_MOST_50}"),
    ("/blocklist add <@123456>", f"Sorry: {NOT_A_WORD} not '<' (U+003C)."),
    ("/blocklist add @everyone", f"Sorry: {NOT_A_WORD} not '@' (U+0040)."),
    ("/blocklist add https://x.invalid", f"Sorry: {NOT_A_WORD} not ':' (U+003A)."),
    ("/blocklist add 'dar\x1bn'", f"Sorry: {NOT_A_WORD} not '\\x1b' (U+001B)."),
    ("/blocklist add ---", "Sorry: A blocked word needs at least one letter or digit."),
    ("/blocklist show all", "Sorry: /blocklist show takes no arguments."),
    ("/blocklist", f"Sorry: {BLOCKLIST_USAGE}"),
    ("/blocklist drop darn", f"Sorry: {BLOCKLIST_USAGE}"),
]


def log_rows() -> dict[str, int]:
    path = os.environ["PROVERBOT_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with closing(sqlite3.connect(path)) as log:
        return {table: log.execute(f"select count(*) from {table}").fetchone()[0]
                for table in ("generations", "candidates", "votes", "posts", "schedules", "audit_log",
                              "blocked_words")}


async def batch(db, platform: str, channel: str, *candidates: NewCandidate) -> list[int]:
    """A finished generation in that channel (as if sampled and shown there); its candidates' ids."""
    generation = await db.record_generation(platform, channel_id=channel, user_id="u", user_name="someone")
    return [c.id for c in (await db.finish_generation(generation, candidates)).candidates]


async def candidates(db, platform: str, channel: str) -> dict[str, int]:
    """{mine}, {rejected} and {empty} in that channel's latest batch, {vetoed} and {posted} (as post #{post}) in an
    earlier one there, {other} and {discord} elsewhere."""
    vetoed, posted = await batch(db, platform, channel, NewCandidate("an old vetoed proverb"),
                                 NewCandidate("an old posted proverb"))
    await db.veto(vetoed, by_name="mod", at=datetime(2030, 1, 1, tzinfo=UTC))
    post = await db.begin_post("dryrun", candidate_id=posted)
    await db.settle_post(post.id, "posted", remote_id="1", url="https://dry-run.invalid/posts/1")
    mine, rejected, empty = await batch(db, platform, channel, NewCandidate("a fool and his money"),
                                        NewCandidate("the lord is", usable=False, reason="blocked_word"),
                                        NewCandidate("", usable=False, reason="empty"))
    other, = await batch(db, "console", "terminal-0ther0", NewCandidate("another console's proverb"))
    discord, = await batch(db, "discord", "1234", NewCandidate("a discord channel's proverb"))
    return {"mine": mine, "rejected": rejected, "empty": empty, "other": other, "discord": discord, "vetoed": vetoed,
            "posted": posted, "post": post.id}


@pytest.mark.parametrize("line, answer", CONSOLE, ids=[f"{n}:{line[:40]!r}" for n, (line, _) in enumerate(CONSOLE)])
async def test_hostile_console_lines(db, worker, sampler, line, answer):
    out = io.StringIO()
    console = Console(make_core(db, worker, sampler), io.StringIO(), out, user="eve")
    ids = await candidates(db, "console", console.terminal.ctx.channel_id)
    console.stdin = io.StringIO(line.format(**ids) + "\n")
    before = log_rows()
    await console.run()
    assert out.getvalue().splitlines()[1:] == [answer.format(**ids)]
    assert log_rows() == before


SLACK = [   # (command, its text, the answer: a refusal in full, or how a behaviour answer starts)
    ("/post", "#99999999999999999999999", not_here("99999999999999999999999")),
    ("/post", "#{other}", not_here("{other}")),
    ("/post", "#{rejected}", "Sorry: Candidate #{rejected} was filtered out (blocked word) and cannot be posted."),
    ("/proverb", "x" * MEGABYTE, TOO_LONG),
    ("/proverb", 'prefix:"unclosed', "Sorry: Cannot read that command: No closing quotation."),
    ("/proverb", "count:1e999", "Sorry: count must be a whole number from 1 to 10 (got 1e999)."),
    ("/proverb-status", "now", "Sorry: /proverb-status takes no arguments."),
    ("/schedule", "daily time:09:30 timezone:../../etc/passwd", f"Sorry: {UNKNOWN_ZONE}"),
    ("/proverb", 'prefix:"@everyone <!here>" count:1', ASKED_FOR_EVERYONE + " &lt;!here&gt;”: ["),      # no ping
    ("/veto", "#{vetoed}", f"Sorry: Candidate #{{vetoed}} was already vetoed by mod ({VETOED_AT}): a veto is final."),
    ("/veto", "#{posted}", ("Sorry: Candidate #{posted} is already posted on dryrun (post #{post}): a veto cannot take "
                            "it back; /unpost #{post} withdraws it.")),
    ("/blocklist", "add <!channel>", f"Sorry: {NOT_A_WORD} not '<' (U+003C)."),
    ("/blocklist", "add", f"Sorry: {WHICH_WORD}"),
]


@pytest.fixture
async def slack(monkeypatch):
    async with fake_slack(monkeypatch) as fake:
        yield fake


@pytest.mark.parametrize("name, text, answer", SLACK, ids=[f"{n}:{name} {text[:30]!r}"
                                                          for n, (name, text, _) in enumerate(SLACK)])
async def test_hostile_slack_commands(slack, db, worker, sampler, name, text, answer):
    bot = make_bot(make_core(db, worker, sampler))
    ids = await candidates(db, "slack", CHANNEL)
    before = log_rows()
    body, (_, ack) = await command(slack, bot, name, text.format(**ids))
    said = [answer for answer in [ack, *slack.answers(body)] if answer][-1]    # in the acknowledgement, or after
    assert said["mrkdwn"] is False
    if answer.startswith("Sorry"):
        assert (said["response_type"], said["text"]) == ("ephemeral", answer.format(**ids))
        assert log_rows() == before
    else:
        assert said["text"].startswith(answer) and "@everyone" not in said["text"]


DISCORD = [  # (command, its options, the answer: a refusal in full, or how a behaviour answer starts)
    ("post", {"candidate": "#99999999999999999999999"}, not_here("99999999999999999999999")),
    ("post", {"candidate": "#{other}"}, not_here("{other}")),
    ("post", {"candidate": "#{discord}"}, not_here("{discord}")),          # another Discord channel's
    ("post", {"candidate": "#{rejected}"}, ("Sorry: Candidate #{rejected} was filtered out (blocked word) and cannot "
                                            "be posted.")),
    ("post", {"candidate": "x" * MEGABYTE}, TOO_LONG),                     # declared ranges are not enforced
    ("proverb", {"prefix": "x" * MEGABYTE}, TOO_LONG),
    ("proverb", {"count": 10**30}, f"Sorry: count must be a whole number from 1 to 10 (got {10**30})."),
    ("proverb", {"temperature": float("nan")}, "Sorry: temperature must be a number from 0.1 to 2 (got nan)."),
    ("history", {"n": 99999999999}, "Sorry: n must be a whole number from 1 to 50 (got 99999999999)."),
    ("proverb", {"prefix": "@everyone <@&1100000000000000004>", "count": 1}, ASKED_FOR_EVERYONE),  # no ping
    ("veto", {"candidate": "#{vetoed}"}, f"Sorry: Candidate #{{vetoed}} was already vetoed by mod ({VETOED_AT}): a "
                                         "veto is final."),
    ("veto", {"candidate": "#{posted}"}, ("Sorry: Candidate #{posted} is already posted on dryrun (post #{post}): a "
                                          "veto cannot take it back; /unpost #{post} withdraws it.")),
    ("veto", {"candidate": "#{other}"}, not_here("{other}")),
]


@pytest.fixture
async def discord_fake():
    async with FakeDiscord() as fake:
        yield fake


@pytest.mark.parametrize("name, options, answer", DISCORD, ids=[f"{n}:{name} {str(options)[:30]}"
                                                                for n, (name, options, _) in enumerate(DISCORD)])
async def test_hostile_discord_commands(discord_fake, db, worker, sampler, name, options, answer):
    bot, task = await start_bot(discord_fake, make_core(db, worker, sampler))
    try:
        ids = await candidates(db, "discord", str(CHANNEL_ID))
        before = log_rows()
        options = {key: value.format(**ids) if isinstance(value, str) else value for key, value in options.items()}
        interaction = await discord_fake.command(name, options, discord_fake.member("ada", permissions=MANAGE_GUILD))
        await discord_fake.until(lambda: interaction.answered)
    finally:
        await stop_bot(bot, task)
    said = interaction.original
    assert said["allowed_mentions"] == {"parse": []}
    if answer.startswith("Sorry"):
        assert said["content"] == answer.format(**ids)
        assert log_rows() == before
    else:
        assert said["content"].startswith(answer) and "@everyone" not in said["content"]
