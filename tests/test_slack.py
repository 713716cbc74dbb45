"""The Slack front end through slack-bolt's own dispatch path (requests signed with the test signing secret), its
Web API calls going to a fake of Slack on loopback (tests/fakes/slack_api.py), and Socket Mode through slack_sdk's
aiohttp client against the fake's WebSocket; the session's tiny model in a real worker and a real SQLite log."""

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from slack_bolt.request.async_request import AsyncBoltRequest

from chatbot import replies
from chatbot.app import run_bot
from chatbot.config import ConfigError, load_settings
from chatbot.context import Context
from chatbot.core import Defaults
from chatbot.frontends import slack_bot
from chatbot.frontends.slack_bot import SlackBot
from chatbot.frontends.slack_setup import MESSAGES, PATH, SlackOptions, SlackTokens, quote, respond, words
from chatbot.scheduler import Scheduler
from model.errors import ProverbotError
from model.worker import ModelWorker
from tests.fakes.discord_api import TOKEN as DISCORD_TOKEN
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER,
    CHANNEL,
    ELSEWHERE,
    POSTERS,
    SIGNING_SECRET,
    FakeSlack,
    fake_slack,
    form,
    signed,
)
from tests.test_core import make_core
from tests.test_discord import GatedSampler
from tests.test_scheduler import START, FakeClock

pytestmark = pytest.mark.asyncio(loop_scope="session")     # the loop the bot and fake (session-scoped fixtures) run on

ROOT = Path(__file__).resolve().parent.parent
TOKENS = SlackTokens(BOT_TOKEN, APP_TOKEN, SIGNING_SECRET)
OPTIONS = {"post_users": ("U0ADA",), "post_usergroups": (POSTERS,), "vote_reactions": ("+1", "fire")}


@pytest.fixture
def core(db, worker, sampler):
    return make_core(db, worker, sampler, defaults=Defaults(count=3, length=20, batch_size=8, temperature=1.0))


@pytest.fixture
async def fake(monkeypatch):
    async with fake_slack(monkeypatch) as fake:
        yield fake


def make_bot(core, process_before_response: bool = True, **options) -> SlackBot:
    return SlackBot(core, SlackOptions(**{**OPTIONS, **options}), TOKENS,
                    process_before_response=process_before_response)


@pytest.fixture
def bot(fake, core):
    return make_bot(core)


async def dispatch(bot: SlackBot, body: dict) -> tuple[int, dict | str]:
    """A command (form-encoded) or an event (JSON) through bolt's dispatch, signed as Slack signs it."""
    if "command" in body:
        raw, content_type = form(body), "application/x-www-form-urlencoded"
    else:
        raw, content_type = json.dumps(body), "application/json"
    response = await bot.app.async_dispatch(AsyncBoltRequest(body=raw, headers=signed(raw, content_type=content_type)))
    return response.status, json.loads(response.body) if response.body.startswith("{") else response.body


async def command(fake: FakeSlack, bot: SlackBot, name: str, text: str = "", user: str = "U0ADA"):
    """(the command's payload, bolt's answer: status and acknowledgement)."""
    body = fake.command(name, text, user)
    return body, await dispatch(bot, body)


async def proverb(fake: FakeSlack, bot: SlackBot, db, text: str = "count:3"):
    """A /proverb with every candidate shown; (usable candidates, their messages); skips below 2 usable."""
    await command(fake, bot, "/proverb", text)
    generation = await db.latest_generation("slack", CHANNEL)
    usable = [c for c in generation.candidates if c.usable]
    if len(usable) < 2:
        pytest.skip("the tiny model gave fewer than two usable candidates")
    return usable, fake.posted()[-len(usable):]


async def votes_of(core) -> list[int]:
    return [row.votes for row in await core.votes(Context("slack", channel_id=CHANNEL))]


def private(answer: dict, text: str) -> bool:
    return answer == {"response_type": "ephemeral", "text": text, "mrkdwn": False}


# --- the app -----------------------------------------------------------------------------------------------------

async def test_the_manifest_asks_for_exactly_what_the_bot_uses(bot):
    manifest = yaml.safe_load((ROOT / "slack" / "manifest.yml").read_text())
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert set(commands) == set(slack_bot.COMMANDS) == {"/proverb", "/votes", "/post", "/history", "/proverb-status",
                                                        "/schedule", "/unpost", "/veto", "/blocklist", "/model"}
    assert all(c["description"] and c["should_escape"] is False for c in commands.values())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {"commands", "chat:write", "reactions:write",
                                                              "reactions:read", "users:read", "usergroups:read"}
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {"reaction_added", "reaction_removed"}
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "user" not in manifest["oauth_config"]["scopes"]             # no user token


# --- /proverb ----------------------------------------------------------------------------------------------------

async def test_proverb_acknowledges_then_shows_each_candidate_with_its_reactions(fake, bot, db):
    body, (status, ack) = await command(fake, bot, "/proverb", 'prefix:"thou shalt" temperature:0.9 count:3')
    assert status == 200 and private(ack, "Sampling…")
    generation = await db.latest_generation("slack", CHANNEL)
    assert (generation.prefix, generation.temperature, generation.count) == ("thou shalt", 0.9, 3)
    assert (generation.server_id, generation.user_id, generation.user_name) == ("T0TEAM", "U0ADA", "ada")
    usable = [c for c in generation.candidates if c.usable]
    summary, = fake.answers(body)                         # to the channel, through the command's response_url
    assert summary["response_type"] == "in_channel" and summary["mrkdwn"] is False
    assert summary["text"].startswith("ada asked for “thou shalt”: [")
    assert f"generation #{generation.id}" in summary["text"]
    assert "React with :+1: or :fire: to vote; /post posts the top-voted." in summary["text"]
    shown = fake.posted()
    assert [m["text"] for m in shown] == [f"{n}. [#{c.id}] {quote(c.text)}" for n, c in enumerate(usable, 1)]
    assert all(m["mrkdwn"] is False for m in fake.messages)
    for candidate, message in zip(usable, shown, strict=True):
        assert candidate.message_id == f"{CHANNEL}/{message['ts']}"
        assert (await db.candidate_by_message("slack", f"{CHANNEL}/{message['ts']}")).id == candidate.id
    assert fake.reactions == [(CHANNEL, m["ts"], name) for m in shown for name in ("+1", "fire")]


async def test_the_acknowledgement_comes_before_the_work(fake, core, db):
    bot = make_bot(core, process_before_response=False)   # as served: bolt answers Slack as soon as ack() is called
    release = fake.hold("chat.postMessage")
    started = time.monotonic()
    body, (status, ack) = await command(fake, bot, "/proverb", "count:2")
    assert status == 200 and private(ack, "Sampling…") and time.monotonic() - started < 3
    assert fake.messages == []                            # the candidates are still on their way
    release.set()
    await fake.until(lambda: not bot.in_flight.tasks)
    assert fake.answers(body)[0]["text"].startswith("ada asked: [")
    assert len(fake.reactions) == 2 * len(fake.messages) > 0


@pytest.mark.parametrize("text, message", [
    ("temperature:5", "temperature must be a number from 0.1 to 2 (got 5)"),
    ("count:0", "count must be a whole number from 1 to 10 (got 0)"),
    ("length:999", "length must be a whole number from 1 to 200 (got 999)"),
    (f"prefix:{'x' * 201}", "at most 200 are allowed"),
    ("prefix:\"thou\u0007shalt\"", "control character (U+0007)"),
    ("colour:red", "Cannot read 'colour:red': use key:value with a key among prefix, temperature, count, length"),
    ('prefix:"unclosed', "Cannot read that command: No closing quotation."),
    ("x" * 1001, "That command is 1,001 characters long; at most 1,000 are read."),
])
async def test_bad_parameters_are_refused_privately_in_the_acknowledgement(fake, bot, db, text, message):
    _body, (status, ack) = await command(fake, bot, "/proverb", text)
    assert status == 200 and ack["response_type"] == "ephemeral" and ack["mrkdwn"] is False
    assert ack["text"].startswith("Sorry: ") and message in ack["text"]
    assert await db.history("generations") == [] and fake.messages == []


async def test_mentions_and_formatting_cannot_escape(fake, bot, db):
    prefix = "<!channel> *hi* @here <@U0BOB> & <#C0ELSEWHERE>"
    body, _ = await command(fake, bot, "/proverb", f'prefix:"{prefix}" count:2')
    assert (await db.latest_generation("slack", CHANNEL)).prefix == prefix        # Slack's escapes undone
    summary, = fake.answers(body)
    for message in [summary, *fake.messages]:
        assert message["mrkdwn"] is False and "<" not in message["text"] and ">" not in message["text"]
        assert "@here" not in message["text"]
    assert "&lt;!channel&gt; *hi* @\u200bhere &lt;@\u200bU0BOB&gt; &amp; &lt;#C0ELSEWHERE&gt;" in summary["text"]


async def test_text_is_escaped_cut_and_paged_to_slacks_limit_with_a_mark():
    assert quote("<!here> a & b @everyone") == "&lt;!here&gt; a &amp; b @\u200beveryone"
    assert words("prefix:“thou &amp; thee” count:3 x&lt;y") == ["prefix:thou & thee", "count:3", "x<y"]
    assert MESSAGES.fit("short") == "short"
    cut = MESSAGES.fit("é" * 5000)
    assert len(cut) == MESSAGES.limit and cut.endswith(" … [trimmed]")
    for shift in range(5):                                 # never half an escape before the mark
        assert MESSAGES.fit("x" * shift + quote("<" * 2000)).removesuffix(" … [trimmed]").endswith("&lt;")
    lines = [f"line {i} " + "x" * 900 for i in range(20)]
    packed = MESSAGES.pages(lines)
    assert all(len(page) <= MESSAGES.limit for page in packed) and len(packed) == 5
    assert "\n".join(packed) == "\n".join(lines)


async def test_long_answers_take_at_most_five_responses(fake):
    body = fake.command("/history")
    await respond(body["response_url"], [f"line {i} " + "x" * 900 for i in range(40)])
    answers = fake.answers(body)
    assert len(answers) == 5 and all(len(a["text"]) <= MESSAGES.limit for a in answers)
    assert answers[-1]["text"].endswith(" … [trimmed]") and answers[0]["text"].startswith("line 0 ")


async def test_a_channel_without_the_bot_gets_a_private_hint(fake, bot, db):
    body = fake.command("/proverb", "count:1", channel=ELSEWHERE)
    status, ack = await dispatch(bot, body)
    assert status == 200 and private(ack, "Sampling…")
    assert private(fake.answers(body)[-1], "Sorry: Slack did not let me post here (not_in_channel): invite me to this "
                                           "channel first (/invite @proverbot).")


async def test_a_waiting_request_shows_its_place_and_a_full_queue_says_busy(fake, db, sampler):
    gated = GatedSampler(sampler)
    async with ModelWorker(lambda: gated, max_queue=1) as worker:
        bot = make_bot(make_core(db, worker, sampler))
        running = asyncio.create_task(command(fake, bot, "/proverb", "count:1"))
        try:
            await asyncio.to_thread(gated.started.wait, 30)
            waiting_body = fake.command("/proverb", "count:1", user="U0BOB")
            waiting = asyncio.create_task(dispatch(bot, waiting_body))
            await fake.until(lambda: fake.answers(waiting_body))
            assert private(fake.answers(waiting_body)[0], "Waiting for the model: #1 in the queue.")
            refused_body, _ = await command(fake, bot, "/proverb", "count:1", user="U0EVE")
            assert private(fake.answers(refused_body)[0], "Sorry: The model is busy (1 requests waiting); try again "
                                                          "shortly.")
            gated.gate.set()
            await asyncio.gather(running, waiting)
            assert fake.answers(waiting_body)[1]["text"].startswith("bob asked: [")
        finally:
            gated.gate.set()


# --- votes -------------------------------------------------------------------------------------------------------

async def test_reactions_are_votes_and_bots_do_not_count(fake, bot, db, core):
    usable, shown = await proverb(fake, bot, db)
    first, second = shown[0]["ts"], shown[1]["ts"]
    rest = [0] * (len(usable) - 2)
    lookups = len(fake.called("users.info"))
    for user, ts, name in [("U0ADA", second, "+1"), ("U0BOB", second, "+1::skin-tone-3"), ("U0BOB", second, "fire"),
                           ("U0OTHERBOT", first, "+1"),          # bots don't count
                           (BOT_USER, first, "+1"),              # nor the bot's own (bolt drops its events)
                           ("U0ADA", first, "smile"),            # not a vote reaction
                           ("U0ADA", "1700000000.000001", "+1")]:  # a message that shows no candidate
        assert await dispatch(bot, fake.reaction("reaction_added", user, ts, name)) == (200, "")
    assert await votes_of(core) == [0, 3] + rest
    assert [call.args["user"] for call in fake.called("users.info")[lookups:]] == ["U0ADA", "U0BOB", "U0OTHERBOT"]
    votes = await db.votes_for(usable[1].id)
    assert {(v.user_id, v.user_name, v.emoji) for v in votes} == {("U0ADA", "ada", "+1"), ("U0BOB", "bob", "fire"),
                                                                 ("U0BOB", "bob", "+1::skin-tone-3")}
    await dispatch(bot, fake.reaction("reaction_removed", "U0BOB", second, "fire"))
    await dispatch(bot, fake.reaction("reaction_removed", "U0EVE", second, "+1"))      # never voted: no change
    assert await votes_of(core) == [0, 2] + rest
    await dispatch(bot, fake.reaction("reaction_added", "U0EVE", second, "+1", channel=ELSEWHERE))  # same ts elsewhere
    assert await votes_of(core) == [0, 2] + rest


async def test_votes_on_messages_from_before_a_restart_still_count(fake, core, db):
    usable, shown = await proverb(fake, make_bot(core), db)
    restarted = make_bot(core)                                     # a new process would do the same
    await dispatch(restarted, fake.reaction("reaction_added", "U0ADA", shown[1]["ts"], "fire"))
    assert await votes_of(core) == [0, 1] + [0] * (len(usable) - 2)


async def test_votes_answers_privately(fake, bot, db):
    usable, shown = await proverb(fake, bot, db)
    await dispatch(bot, fake.reaction("reaction_added", "U0BOB", shown[0]["ts"]))
    body, (status, ack) = await command(fake, bot, "/votes")
    assert (status, ack) == (200, "")
    answer, = fake.answers(body)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith(f"1. [#{usable[0].id}] 1 vote: {quote(usable[0].text)}\n2. [#{usable[1].id}] "
                                     "0 votes: ")


# --- /post -------------------------------------------------------------------------------------------------------

async def test_post_is_for_listed_users_user_groups_and_admins(fake, bot, db):
    usable, _ = await proverb(fake, bot, db)
    refused, (status, ack) = await command(fake, bot, "/post", user="U0EVE")
    assert (status, ack) == (200, "")                                   # acknowledged at once, answered after
    assert private(fake.answers(refused)[0], "Sorry: Posting and schedules are for workspace admins or the users in "
                                             "slack_post_users or members of S0POSTERS.")
    for user, number in [("U0ADA", 1), ("U0BOB", 2)]:                   # listed, in the group
        posted, _ = await command(fake, bot, "/post", str(number), user=user)
        answer, = fake.answers(posted)
        assert answer["response_type"] == "in_channel" and answer["mrkdwn"] is False
        assert answer["text"].startswith(f"Posted [#{usable[number - 1].id}] on dryrun: https://dry-run.invalid/")
    by_admin, _ = await command(fake, bot, "/post", "1", user="U0ADMIN")  # may post: the refusal is another
    assert fake.answers(by_admin)[0]["text"].startswith("Sorry: already posted: https://dry-run.invalid/")
    assert len(await db.history("posts")) == 2


async def test_post_without_admins_names_who_may(fake, core, db):
    bot = make_bot(core, post_users=(), post_usergroups=(), post_admins=False)
    body, _ = await command(fake, bot, "/post", user="U0ADMIN")
    assert fake.answers(body)[0]["text"] == ("Sorry: Posting and schedules are off here: nobody is named in "
                                             "slack_post_users or slack_post_usergroups, and slack_post_admins is "
                                             "false.")


async def test_post_publishes_the_top_voted_then_refuses_it_twice(fake, bot, db):
    usable, shown = await proverb(fake, bot, db)
    await dispatch(bot, fake.reaction("reaction_added", "U0BOB", shown[1]["ts"]))
    said = []
    for text in ["", "2", f"#{usable[0].id} to:dryrun", "first", "1 to:myspace"]:
        body, (_, ack) = await command(fake, bot, "/post", text)
        said.append(ack or fake.answers(body)[0])             # refused in the acknowledgement, or answered after
    assert said[0]["text"].startswith(f"Posted [#{usable[1].id}] on dryrun: https://dry-run.invalid/posts/")
    assert said[1]["response_type"] == "ephemeral"
    assert said[1]["text"].startswith("Sorry: already posted: https://dry-run.invalid/posts/")
    assert said[2]["text"].startswith(f"Posted [#{usable[0].id}] on dryrun:")
    assert private(said[3], "Sorry: 'first' is not a candidate number: give e.g. 1 (latest batch) or #12 (storage "
                            "id).")
    assert said[4]["response_type"] == "ephemeral" and "'myspace' is not one of x, mastodon, bluesky" in said[4]["text"]
    _, (_, ack) = await command(fake, bot, "/post", "1 2")
    assert private(ack, "Sorry: Give one candidate: its number in the latest batch, or #ID (and to:NAME for where).")
    assert len(await db.history("posts")) == 2


# --- history, status, schedules ----------------------------------------------------------------------------------

async def test_history_and_status_answer_privately(fake, bot, db, core):
    await proverb(fake, bot, db)
    await command(fake, bot, "/post")
    history, _ = await command(fake, bot, "/history", "5", user="U0EVE")
    status, _ = await command(fake, bot, "/proverb-status", user="U0EVE")
    (history_answer,), (status_answer,) = fake.answers(history), fake.answers(status)
    assert history_answer["response_type"] == status_answer["response_type"] == "ephemeral"
    assert history_answer["text"].startswith("post #1 posted on dryrun ")
    assert status_answer["text"] == f"{replies.status(await core.status())}\nNo schedule here."
    assert (await core.status()).posts_last_24h == 1
    _, (_, ack) = await command(fake, bot, "/history", "5 6")
    assert private(ack, "Sorry: /history takes at most one number: how many posts to show.")


async def test_schedule_commands(fake, bot, db):
    said = []
    for user, text in [("U0EVE", "daily time:09:30"),
                       ("U0ADMIN", "daily time:09:30 timezone:Europe/Paris window:10 to:dryrun"),
                       ("U0ADMIN", "daily time:25:00"), ("U0EVE", "show"), ("U0ADMIN", "off")]:
        body, (status, ack) = await command(fake, bot, "/schedule", text, user)
        assert (status, ack) == (200, "")
        answer, = fake.answers(body)
        said.append((answer["response_type"], answer["text"]))
    assert said[0] == ("ephemeral", ("Sorry: Posting and schedules are for workspace admins or the users in "
                                    "slack_post_users or members of S0POSTERS."))
    assert said[1][0] == "in_channel"
    assert said[1][1].startswith("Daily at 09:30 Europe/Paris, voting open 10 min, posting on dryrun; next run")
    assert said[2][0] == "ephemeral" and said[2][1].startswith("Sorry: Time of day '25:00' is not HH:MM")
    assert said[3] == ("ephemeral", said[1][1])
    assert said[4] == ("in_channel", "Schedule off.")
    schedule = await db.get_schedule("slack", CHANNEL, server_id="T0TEAM")
    assert (schedule.enabled, schedule.set_by_id, schedule.publisher) == (False, "U0ADMIN", "dryrun")
    for text, refusal in [("weekly", "Use /schedule daily time:HH:MM"), ("daily", "/schedule daily needs time:HH:MM"),
                          ("show now", "/schedule show takes no arguments.")]:
        _, (_, ack) = await command(fake, bot, "/schedule", text, "U0ADMIN")
        assert ack["response_type"] == "ephemeral" and ack["text"].startswith(f"Sorry: {refusal}")


async def test_a_scheduled_run_shows_its_batch_in_the_channel_and_posts_the_winner(fake, bot, db, core):
    clock = FakeClock(START)
    await core.set_schedule(Context("slack", channel_id=CHANNEL, server_id="T0TEAM"), "09:00", window_minutes=5,
                            at=START)
    clock.advance(hours=1)
    tasks = await Scheduler(core, db, [bot], clock).run_due()
    await clock.sleeping(1)
    generation = await db.latest_generation("slack", CHANNEL)
    usable = [c for c in generation.candidates if c.usable]
    note, *shown = fake.posted()
    assert note["text"].startswith("Scheduled post: voting closes in 5 min; nobody votes: 1 is posted.\n[")
    assert [m["text"] for m in shown] == [f"{n}. [#{c.id}] {quote(c.text)}" for n, c in enumerate(usable, 1)]
    assert len(fake.reactions) == 2 * len(usable)
    if len(usable) >= 2:
        await dispatch(bot, fake.reaction("reaction_added", "U0BOB", shown[1]["ts"]))
    clock.advance(minutes=5)
    await asyncio.gather(*tasks)
    winner = usable[1] if len(usable) >= 2 else usable[0]
    assert fake.posted()[-1]["text"].startswith(f"Scheduled post: Posted [#{winner.id}] on dryrun: https://")
    assert all(m["mrkdwn"] is False for m in fake.messages)


# --- HTTP mode: signatures ---------------------------------------------------------------------------------------

@pytest.fixture
async def served_http(fake, core):
    """The bot serving HTTP mode on a free loopback port; yields its events URL."""
    bot = make_bot(core, process_before_response=False, http=True, host="127.0.0.1", port=0)
    task = asyncio.create_task(bot.serve())
    await fake.until(lambda: bot.connection.server is not None)
    assert bot.healthy()
    yield f"http://127.0.0.1:{bot.connection.server.addresses[0][1]}{PATH}"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not bot.healthy()


@pytest.mark.parametrize("headers, accepted", [
    (lambda raw: signed(raw), True),
    (lambda raw: signed(raw, secret="another-secret"), False),                     # a forged signature
    (lambda raw: signed(raw, timestamp=int(time.time()) - 6 * 60), False),          # a replay, 6 minutes late
    (lambda raw: {"Content-Type": "application/x-www-form-urlencoded"}, False),    # no signature at all
    (lambda raw: signed(raw + "&text=count%3A9"), False),                          # signed for another body
], ids=["signed", "forged", "replayed", "unsigned", "another-body"])
async def test_http_mode_takes_only_requests_signed_by_slack_and_fresh(fake, served_http, db, headers, accepted):
    body = fake.command("/votes")
    raw = form(body)
    async with aiohttp.ClientSession() as session, session.post(served_http, data=raw, headers=headers(raw)) as sent:
        status = sent.status
    assert status == (200 if accepted else 401)
    await fake.until(lambda: fake.answers(body) or not accepted)
    if accepted:
        assert private(fake.answers(body)[0], "Sorry: No candidates in this channel yet: ask for some with /proverb.")
    else:
        assert fake.answers(body) == []
        assert len(fake.called("auth.test")) == 1             # the start's: bolt refused it before anything else


# --- Socket Mode and proverbot run -------------------------------------------------------------------------------

@pytest.fixture
def slack_settings(trained_run, tmp_path, monkeypatch, fake):
    monkeypatch.setenv("PROVERBOT_CHECKPOINT_DIR", str(trained_run.parent))
    monkeypatch.setenv("PROVERBOT_HEALTH_FILE", str(tmp_path / "proverbot.health"))
    monkeypatch.setenv("PROVERBOT_DEVICE", "cpu")
    monkeypatch.setenv("PROVERBOT_SLACK_POST_USERS", '["U0ADA"]')
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    return load_settings()


async def test_run_serves_slack_in_socket_mode_and_stops_cleanly(fake, slack_settings, db):
    task = asyncio.create_task(run_bot(slack_settings))
    await asyncio.wait_for(fake.connected.wait(), 60)
    assert fake.called("apps.connections.open")[0].token == APP_TOKEN
    body = fake.command("/proverb", "count:2")
    ack = await fake.deliver("slash_commands", body)                   # acknowledged by envelope id, at once
    assert ack["payload"] == {"response_type": "ephemeral", "text": "Sampling…", "mrkdwn": False}
    await fake.until(lambda: fake.answers(body))
    assert fake.answers(body)[0]["text"].startswith("ada asked: [")
    assert "slack" in json.loads(slack_settings.health_file.read_text())["connected"]
    task.cancel()                                                      # what SIGTERM does, while candidates are sent
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    generation = (await db.history("generations"))[0]
    assert (generation.status, generation.platform) == ("ok", "slack")
    shown = [c for c in (await db.get_generation(generation.id)).candidates if c.usable]
    assert len(fake.messages) == len(shown)                            # the command in flight finished first
    assert all(c.message_id for c in shown)


async def test_socket_mode_takes_commands_and_votes_acknowledged_by_envelope(fake, core, db):
    bot = make_bot(core, process_before_response=False)
    task = asyncio.create_task(bot.serve())
    try:
        await asyncio.wait_for(fake.connected.wait(), 60)
        await fake.until(bot.healthy)
        ack = await fake.deliver("slash_commands", fake.command("/proverb", "count:2"))
        assert ack["payload"]["text"] == "Sampling…"
        await fake.until(lambda: fake.reactions and len(fake.reactions) == 2 * len(fake.messages))
        ack = await fake.deliver("events_api", fake.reaction("reaction_added", "U0BOB", fake.messages[0]["ts"]))
        assert ack == {"envelope_id": ack["envelope_id"]}
        async with asyncio.timeout(30):
            while (await votes_of(core))[:1] != [1]:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not bot.healthy()


async def test_one_run_serves_discord_and_slack_with_one_worker_and_one_log(fake, slack_settings, monkeypatch, db):
    monkeypatch.setenv("DISCORD_TOKEN", DISCORD_TOKEN)
    async with FakeDiscord() as discord_fake:
        task = asyncio.create_task(run_bot(load_settings()))
        try:
            await asyncio.wait_for(fake.connected.wait(), 60)
            await discord_fake.until(lambda: discord_fake.identified.is_set() and discord_fake.synced)
            body = fake.command("/proverb", "count:1")
            await fake.deliver("slash_commands", body)
            interaction = await discord_fake.command("proverb", {"count": 1})
            await discord_fake.until(lambda: interaction.answered)
            await fake.until(lambda: fake.answers(body))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert sorted(g.platform for g in await db.history("generations")) == ["discord", "slack"]


async def test_refused_tokens_end_run_with_a_clear_error(fake, slack_settings, monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-the-token")
    with pytest.raises(ProverbotError, match=r"Slack refused SLACK_BOT_TOKEN \(invalid_auth\)") as refused:
        await asyncio.wait_for(run_bot(load_settings()), 60)
    assert "not-the-token" not in str(refused.value)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-not-the-token")
    with pytest.raises(ProverbotError, match=r"Slack refused SLACK_APP_TOKEN \(invalid_auth\)") as refused:
        await asyncio.wait_for(run_bot(load_settings()), 60)
    assert "not-the-token" not in str(refused.value)


@pytest.mark.parametrize("environment, http, message", [
    ({"SLACK_BOT_TOKEN": BOT_TOKEN}, False, ("Slack in Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN, and "
                                            "SLACK_APP_TOKEN is not set")),
    ({"SLACK_APP_TOKEN": APP_TOKEN}, False, "and SLACK_BOT_TOKEN is not set"),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}, True,
     ("Slack in HTTP mode (slack_http) needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET, and SLACK_SIGNING_SECRET is not "
     "set")),
])
async def test_missing_tokens_are_named(monkeypatch, environment, http, message):
    without_slack_tokens(monkeypatch)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ProverbotError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SlackTokens.from_settings(load_settings(), http)
    assert BOT_TOKEN not in repr(SlackTokens(BOT_TOKEN, APP_TOKEN, SIGNING_SECRET))


async def test_tokens_come_from_the_settings_under_either_name(monkeypatch):
    without_slack_tokens(monkeypatch)
    monkeypatch.setenv("PROVERBOT_SLACK_BOT_TOKEN", f"  {BOT_TOKEN}\n")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    assert SlackTokens.from_settings(load_settings(), http=True) == SlackTokens(BOT_TOKEN, None, SIGNING_SECRET)


def without_slack_tokens(monkeypatch):
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"PROVERBOT_{name}", raising=False)


@pytest.mark.parametrize("settings, message", [
    ({"slack_vote_reactions": ["thumbs up"]}, "slack_vote_reactions needs at least one reaction name"),
    ({"slack_post_users": ["@ada"]}, "slack_post_users takes user ids such as U0123ABCD"),
    ({"slack_post_usergroups": ["posters"]}, "slack_post_usergroups takes user group ids such as S0123ABCD"),
])
async def test_bad_slack_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        SlackOptions.from_settings(load_settings(**settings))


async def test_reaction_names_may_be_written_with_colons():
    assert SlackOptions.from_settings(load_settings(slack_vote_reactions=[":+1:", "fire"])).vote_reactions == ("+1",
                                                                                                               "fire")
