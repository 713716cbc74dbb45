"""/unpost and `proverbot unpost`: a published post deleted on its platform (the real X, Mastodon and Bluesky
publishers against their loopback fakes, and the dry run), then marked withdrawn in a real SQLite log with who and
when; through the console, Discord and Slack front ends and the command line. Whatever is refused sends nothing
and marks nothing."""

import asyncio
import io
import json
import re
from dataclasses import replace

import pytest
from atproto_core.uri import AtUri

from chatbot.cli import main
from chatbot.context import Context
from chatbot.core import Core, ModelInfo
from chatbot.frontends.console import Console
from chatbot.posting import UnpostFailed
from chatbot.publishers import twitter
from chatbot.publishers.dryrun import DryRunPublisher
from chatbot.publishers.registry import Publishers
from storage import AlreadyPosted, NotWithdrawable
from tests.fakes.bluesky_api import FakeBluesky, xrpc_error
from tests.fakes.discord_api import MANAGE_GUILD, FakeDiscord
from tests.fakes.loopback import Reply, guard_network
from tests.fakes.mastodon_api import FakeMastodon
from tests.fakes.slack_api import fake_slack
from tests.fakes.x_api import UNAVAILABLE, FakeX, problem, sessions_to
from tests.test_core import TEST_DEFAULTS
from tests.test_discord import start_bot, stop_bot
from tests.test_publish_bluesky import APP_PASSWORD, HANDLE
from tests.test_publish_bluesky import publisher_for as bluesky_publisher
from tests.test_publish_mastodon import TOKEN
from tests.test_publish_mastodon import publisher_for as mastodon_publisher
from tests.test_publish_x import ENV, KEYS
from tests.test_publish_x import publisher_for as x_publisher
from tests.test_slack import command, make_bot

SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")    # the loop the Discord and Slack fakes run on
ADA = Context("console", channel_id="terminal-1", user_id="ada", user_name="ada")
TEXT = "A soft answer turneth away wrath."
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    guard_network(monkeypatch)


@pytest.fixture
def fakes():
    with FakeX(*KEYS.values()) as x, FakeMastodon(TOKEN) as mastodon, FakeBluesky(HANDLE, APP_PASSWORD) as bluesky:
        yield {"x": x, "mastodon": mastodon, "bluesky": bluesky}


@pytest.fixture
def core(db, worker, sampler, fakes):
    publishers = Publishers([x_publisher(fakes["x"]), mastodon_publisher(fakes["mastodon"]),
                             bluesky_publisher(fakes["bluesky"]), DryRunPublisher()])
    return Core(db, worker, publishers, ModelInfo.of(sampler), TEST_DEFAULTS)


def deletes(fakes) -> list[tuple[str, str]]:
    """Every delete call the fakes received: (platform, path)."""
    return [(name, r.path) for name, fake in fakes.items() for r in fake.requests
            if r.method == "DELETE" or r.path.endswith("deleteRecord")]


async def console(core, lines: str, user: str = "ada") -> list[str]:
    """What the real console answers to `lines` (without its greeting)."""
    out = io.StringIO()
    await Console(core, io.StringIO(lines), out, user=user).run()
    return out.getvalue().splitlines()[1:]


async def unposts(db) -> list:
    return [entry for entry in await db.history("audit", limit=100) if entry.action == "post.unpost"]


# --- withdrawing, once --------------------------------------------------------------------------------------------

@SESSION_LOOP
@pytest.mark.parametrize("platform", ["x", "mastodon", "bluesky", "dryrun"])
async def test_unpost_deletes_once_on_its_platform_and_records_who_and_when(core, db, fakes, platform):
    posted = await core.post(ADA, text=TEXT, to=platform)
    remote_id = (await db.get_post(posted.post_id)).remote_id
    said = await console(core, "/unpost #1\n/unpost post:#1\n/history 1\n")
    assert said[:2] == [f"Withdrew post #1 from {platform}: {posted.url} is deleted.", f"  {TEXT}"]
    assert re.fullmatch(rf"Sorry: Post #1 on {platform} is already withdrawn \({WHEN} by ada\): nothing was sent\.",
                        said[2])
    assert re.fullmatch(rf"post #1 posted on {platform} {WHEN}: {re.escape(posted.url)} \(withdrawn {WHEN} by ada\)",
                        said[3])
    post = await db.get_post(1)
    assert (post.status, post.deleted_by_id, post.deleted_by_name) == ("posted", "ada", "ada")
    assert post.deleted_at is not None
    expected = {"x": [("x", f"/2/tweets/{remote_id}")], "mastodon": [("mastodon", f"/api/v1/statuses/{remote_id}")],
                "bluesky": [("bluesky", "/xrpc/com.atproto.repo.deleteRecord")], "dryrun": []}
    assert deletes(fakes) == expected[platform]                 # exactly one, and the second /unpost sent nothing
    if platform == "dryrun":
        assert core.publishers.get("dryrun").deleted == [remote_id]
    else:
        gone = AtUri.from_str(remote_id).rkey if platform == "bluesky" else remote_id
        assert fakes[platform].deleted == [gone]
        assert not (fakes["x"].tweets if platform == "x" else fakes[platform].texts())
    [entry] = await unposts(db)
    assert (entry.actor_id, entry.actor_name, entry.target) == ("ada", "ada", "post #1")
    assert re.fullmatch(rf"console/terminal-[0-9a-f]{{6}} → {platform} deleted: {re.escape(posted.url)}", entry.detail)


@SESSION_LOOP
async def test_a_withdrawn_text_is_not_posted_there_again(core, db, fakes):
    posted = await core.post(ADA, text=TEXT, to="mastodon")
    await core.unpost(ADA, 1)
    with pytest.raises(AlreadyPosted, match=rf"^That text was posted on mastodon and withdrawn \({WHEN} by ada; post "
                       r"#1\): it is not posted there again\.$") as refused:
        await core.post(ADA, text=TEXT, to="mastodon")
    assert refused.value.url == posted.url
    assert [post.id for post in await db.history("posts")] == [1] and len(fakes["mastodon"].received(
        "POST /api/v1/statuses")) == 1


@SESSION_LOOP
async def test_two_moderators_at_once_withdraw_it_once(core, db, fakes):
    await core.post(ADA, text=TEXT, to="mastodon")
    bob = replace(ADA, user_id="bob", user_name="bob")
    results = await asyncio.gather(core.unpost(ADA, 1), core.unpost(bob, 1), return_exceptions=True)
    [done] = [result for result in results if not isinstance(result, BaseException)]
    [refused] = [result for result in results if isinstance(result, BaseException)]
    assert isinstance(refused, UnpostFailed | NotWithdrawable)   # the platform no longer has it, or the log says so
    assert len(fakes["mastodon"].deleted) == 1
    assert (await db.get_post(1)).deleted_by_name == done.deleted_by_name
    assert len([entry for entry in await unposts(db) if " deleted: " in entry.detail]) == 1


# --- refused before anything is sent ------------------------------------------------------------------------------

async def posts_in_every_state(db) -> None:
    """#1 posted on x (by core.post), #2 pending, #3 failed, #4 unknown, #5 posted by hand without a remote id,
    #6 posted on a platform not configured here."""
    for status in ("pending", "failed", "unknown"):
        post = await db.begin_post("x", text=f"{status} text")
        if status != "pending":
            await db.settle_post(post.id, status, error="test")
    by_hand = await db.begin_post("x", text="settled by hand")
    await db.settle_post_by_hand(by_hand.id, "posted", url="https://x.com/i/web/status/5", by="ops")
    elsewhere = await db.begin_post("tumblr", text="elsewhere")
    await db.settle_post(elsewhere.id, "posted", remote_id="t-1", url="https://tumblr.invalid/t-1")


HOSTILE = [   # (what a user typed, the one line the console answers)
    ("/unpost #99", "Sorry: There is no post #99 in the log."),
    ("/unpost 9223372036854775807", "Sorry: There is no post #9223372036854775807 in the log."),
    ("/unpost #2", "Sorry: Post #2 on x is being posted right now: withdraw it once it is posted."),
    ("/unpost #3", "Sorry: Post #3 on x failed: it is not online, so there is nothing to withdraw."),
    ("/unpost #4", "Sorry: Post #4 on x has an unknown outcome: check the account, record it with `proverbot db "
                   "settle-post 4 posted --url URL --remote-id ID`, then withdraw it."),
    ("/unpost #5", "Sorry: Post #5 on x has no remote id in the log (it was settled by hand without --remote-id), "
                   "so proverbot cannot name it to the platform: delete it there by hand."),
    ("/unpost #6", "Sorry: Post #6 is on tumblr, which is not configured here: nothing was sent."),
    ("/unpost", "Sorry: Name one post by its number, e.g. /unpost #3 (/history lists them)."),
    ("/unpost #1 #2", "Sorry: Name one post by its number, e.g. /unpost #3 (/history lists them)."),
    ("/unpost #x", "Sorry: '#x' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost #0", "Sorry: '#0' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost -1", "Sorry: '-1' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost 1.5", "Sorry: '1.5' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost ＃１", "Sorry: '＃１' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost ##1", "Sorry: '##1' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost post:", "Sorry: 'post:' is not a post number: give e.g. #3 (/history lists them)."),
    ("/unpost '#1; DROP TABLE posts'", "Sorry: '#1; DROP TABLE posts' is not a post number: give e.g. #3 (/history "
                                       "lists them)."),
    ("/unpost #9223372036854775808", "Sorry: '#9223372036854775808' is not a post number: give e.g. #3 (/history "
                                     "lists them)."),
    ("/unpost " + "9" * 900, "Sorry: '9999999999999999999999999999999999999999' is not a post number: give e.g. #3 "
                             "(/history lists them)."),
]


@SESSION_LOOP
async def test_what_cannot_be_withdrawn_is_one_line_and_sends_nothing(core, db, fakes):
    await core.post(ADA, text=TEXT, to="x")
    await posts_in_every_state(db)
    said = await console(core, "".join(f"{line}\n" for line, _ in HOSTILE))
    assert said == [answer for _, answer in HOSTILE]
    assert deletes(fakes) == [] and core.publishers.get("dryrun").deleted == []
    assert all(post.deleted_at is None for post in await db.history("posts", limit=100))
    assert await unposts(db) == []


@SESSION_LOOP
async def test_a_post_made_elsewhere_is_not_deleted_by_a_stand_in(db, worker, sampler, fakes):
    """With dry_run forced, the dry run answers for x: a real X post is not "deleted" there."""
    post = await db.begin_post("x", text=TEXT)
    await db.settle_post(post.id, "posted", remote_id="1800", url="https://x.com/i/web/status/1800")
    dry = DryRunPublisher()
    core = Core(db, worker, Publishers([dry], stand_ins=["x"], note="dry run (dry_run is set): nothing is posted on x"),
                ModelInfo.of(sampler), TEST_DEFAULTS)
    assert await console(core, "/unpost #1\n") == [
        "Sorry: Post #1 is on x, which is not configured here (dry run (dry_run is set): nothing is posted on x): "
        "nothing was sent."]
    assert dry.deleted == [] and (await db.get_post(1)).deleted_at is None


# --- the platform refuses ------------------------------------------------------------------------------------------

REFUSALS = [   # (platform, the fake's answer to the delete, what the sender reads after "did not delete post #1: ")
    ("x", problem(403, "Forbidden", "You are not allowed to delete a Tweet you did not create."),
     "X refused the post (403 Forbidden: You are not allowed to delete a Tweet you did not create.)."),
    ("x", problem(404, "Not Found Error", "Could not find tweet."), "X has no post {id} on this account (404 Not "
     "Found): it may have been deleted there already."),
    ("x", UNAVAILABLE, "X is unavailable (503 Service Unavailable: Service Unavailable)."),
    ("mastodon", Reply(403, {"error": "This action is not allowed"}),
     "Mastodon refused the post (403 Forbidden: This action is not allowed)."),
    ("mastodon", Reply(404, {"error": "Record not found"}), "Mastodon has no post {id} on this account (404 Not "
     "Found): it may have been deleted there already."),
    ("mastodon", Reply(500, {"error": "We're sorry, but something went wrong"}), "Mastodon is unavailable (500 "
     "Internal Server Error: We're sorry, but something went wrong)."),
    ("bluesky", xrpc_error(403, "Forbidden", "not your repo"), "Bluesky refused the session (403 Forbidden: not your "
     "repo); check bluesky_handle and bluesky_app_password."),
    ("bluesky", xrpc_error(400, "InvalidRequest", "Could not find repo"), "Bluesky refused the post ("),
    ("bluesky", xrpc_error(500, "InternalServerError", "Internal Server Error"), "Bluesky is unavailable ("),
]


@SESSION_LOOP
@pytest.mark.parametrize("platform, reply, reason", REFUSALS)
async def test_a_platform_that_refuses_marks_nothing_and_a_later_try_works(core, db, fakes, platform, reply, reason):
    posted = await core.post(ADA, text=TEXT, to=platform)
    remote_id = (await db.get_post(posted.post_id)).remote_id
    fakes[platform].delete_failures.append(reply)
    said = await console(core, "/unpost #1\n/unpost #1\n")
    title = {"x": "X", "mastodon": "Mastodon", "bluesky": "Bluesky"}[platform]
    start = f"Sorry: {title} did not delete post #1: {reason.format(id=remote_id)}"
    assert said[0].startswith(start) and said[0].endswith(" Nothing was marked: the post is still listed as posted.")
    assert said[1] == f"Withdrew post #1 from {platform}: {posted.url} is deleted."    # once the platform agrees
    assert len(deletes(fakes)) == 2 and len(fakes[platform].deleted) == 1              # one try each time
    failed, done = reversed(await unposts(db))
    assert failed.detail.startswith("console/terminal-") and " delete failed: " in failed.detail
    assert done.detail.endswith(f"deleted: {posted.url}")


@SESSION_LOOP
async def test_refused_then_nothing_marked_in_the_log(core, db, fakes):
    await core.post(ADA, text=TEXT, to="x")
    fakes["x"].delete_failures.append(UNAVAILABLE)
    await console(core, "/unpost #1\n")
    post = await db.get_post(1)
    assert (post.deleted_at, post.deleted_by_id, post.deleted_by_name) == (None, None, None)


# --- who may: Discord and Slack ------------------------------------------------------------------------------------

@pytest.fixture
async def discord():
    async with FakeDiscord() as fake:
        yield fake


@SESSION_LOOP
async def test_discord_unpost_is_for_those_who_may_post(discord, core, db):
    posted = await core.post(ADA, text=TEXT, to="dryrun")
    bot, task = await start_bot(discord, core)
    try:
        refused = await discord.command("unpost", {"post": "#1"}, member=discord.member("eve"))
        bad = await discord.command("unpost", {"post": "first"}, member=discord.member("ada", permissions=MANAGE_GUILD))
        await discord.until(lambda: refused.answered and bad.answered)
        assert refused.ephemeral and refused.callbacks[0]["data"]["content"] == (
            "Sorry: Posting and schedules need the manage guild permission or the role poster.")
        assert bad.ephemeral and bad.callbacks[0]["data"]["content"] == (
            "Sorry: 'first' is not a post number: give e.g. #3 (/history lists them).")
        assert core.publishers.get("dryrun").deleted == [] and (await db.get_post(1)).deleted_at is None
        done = await discord.command("unpost", {"post": "#1"}, member=discord.member("ada", permissions=MANAGE_GUILD))
        await discord.until(lambda: done.answered)
        assert done.original["content"] == f"Withdrew post #1 from dryrun: {posted.url} is deleted.\n  {TEXT}"
        assert not done.ephemeral and (await db.get_post(1)).deleted_by_name == "ada"
    finally:
        await stop_bot(bot, task)


@pytest.fixture
async def slack(monkeypatch):
    async with fake_slack(monkeypatch) as fake:
        yield fake


@SESSION_LOOP
async def test_slack_unpost_is_for_those_who_may_post(slack, core, db):
    posted = await core.post(ADA, text=TEXT, to="dryrun")
    bot = make_bot(core)
    refused, _ = await command(slack, bot, "/unpost", "#1", user="U0EVE")
    assert slack.answers(refused)[0]["text"] == ("Sorry: Posting and schedules are for workspace admins or the users "
                                                 "in slack_post_users or members of S0POSTERS.")
    _, (_, ack) = await command(slack, bot, "/unpost", "#one")
    assert ack["response_type"] == "ephemeral" and ack["text"] == (
        "Sorry: '#one' is not a post number: give e.g. #3 (/history lists them).")
    assert core.publishers.get("dryrun").deleted == [] and (await db.get_post(1)).deleted_at is None
    done, _ = await command(slack, bot, "/unpost", "#1", user="U0ADA")
    answer, = slack.answers(done)
    assert answer["response_type"] == "in_channel"
    assert answer["text"] == f"Withdrew post #1 from dryrun: {posted.url} is deleted.\n  {TEXT}"
    assert (await db.get_post(1)).deleted_by_id == "U0ADA"


# --- the command line ----------------------------------------------------------------------------------------------

@pytest.fixture
def cli_fakes(monkeypatch, tmp_path, fakes):
    """The settings name the three fakes (X through its routed session); no other credentials, no proverbot.toml."""
    for name in ["PROVERBOT_CONFIG", "PROVERBOT_ENV_FILE", *(f"PROVERBOT_{name}" for name in ENV)]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(twitter, "TimeoutSession", sessions_to(fakes["x"].url))
    for name, value in {**ENV, "PROVERBOT_MASTODON_API_BASE_URL": fakes["mastodon"].url,
                        "PROVERBOT_MASTODON_ACCESS_TOKEN": TOKEN, "PROVERBOT_BLUESKY_HANDLE": HANDLE,
                        "PROVERBOT_BLUESKY_APP_PASSWORD": APP_PASSWORD,
                        "PROVERBOT_BLUESKY_BASE_URL": fakes["bluesky"].url}.items():
        monkeypatch.setenv(name, value)
    return fakes


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize("platform", ["x", "mastodon", "bluesky"])
def test_proverbot_unpost_withdraws_a_post_as_the_login(cli_fakes, capsys, platform):
    code, out, _ = run(capsys, "post", "--text", TEXT, "--to", platform)
    assert code == 0
    url = out.split(": ", 1)[1].split(" (post #1)")[0]
    code, out, err = run(capsys, "unpost", "1")
    assert (code, out, err) == (0, f"Withdrew post #1 from {platform}: {url} is deleted.\n  {TEXT}\n", "")
    code, out, err = run(capsys, "unpost", "#1")
    assert code == 2 and "not a whole number: '#1'" in err
    code, out, err = run(capsys, "unpost", "1")
    assert code == 1 and out == ""
    assert re.fullmatch(rf"proverbot: error: Post #1 on {platform} is already withdrawn \({WHEN} by \S+\): nothing "
                        r"was sent\.\n", err)
    assert run(capsys, "unpost", "2")[2] == "proverbot: error: There is no post #2 in the log.\n"
    assert len(deletes(cli_fakes)) == 1 and len(cli_fakes[platform].deleted) == 1
    [post] = json.loads(run(capsys, "history", "--kind", "posts", "--json")[1])
    assert post["deleted_at"] and post["deleted_by_name"] and post["deleted_by_id"] is None
    audit = json.loads(run(capsys, "history", "--kind", "audit", "--json")[1])
    assert [(a["action"], a["target"]) for a in audit if a["action"] == "post.unpost"] == [("post.unpost", "post #1")]
    assert "deleted_by_name" in run(capsys, "history", "--kind", "posts")[1]
